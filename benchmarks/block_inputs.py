"""Should a block learn from the teacher's inputs or from the quantised student's own? Measured.

    .venv/bin/python benchmarks/block_inputs.py --cache DIR [--layers 6] [--steps 100] [--format int3 --group 192]

DIR is a teacher cache that `xtc compress` built (`--cache-dir`). The first --layers layers of the
full-depth student, quantisers in the loop, are trained block-wise twice with the same steps and
seed, once per `--block-inputs` choice, on the cache's first windows; then the quantised layers run
in sequence from the cached embeddings over held-out windows (the last --held-out of the cache) and
the relative error (the block loss) against the teacher's hidden state is printed after each layer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chain_error(student, cache, first: int, n_layers: int, kwargs: dict) -> list[float]:
    """Relative error against the teacher after each of the first n_layers quantised layers, run in
    sequence from the cached embeddings of windows first.. ."""
    import torch

    from xtc.train import arch as archs
    from xtc.train.blockwise import block_loss

    layers = archs.decoder_layers(student)
    errors = []
    with torch.no_grad():
        x = torch.from_numpy(cache.hidden[0, first:].astype("float32"))
        for i in range(n_layers):
            x = archs.run_layer(layers[i].eval(), x, kwargs)
            errors.append(block_loss(x, torch.from_numpy(cache.hidden[i + 1, first:].astype("float32"))).item())
    return errors


def block_args(description: str, fmt: str, group: int) -> argparse.ArgumentParser:
    """The flags every block-stage benchmark takes (this one and `quant_warmup.py`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--teacher", default="smollm2")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--held-out", type=int, default=16, help="windows kept out of training")
    p.add_argument("--format", default=fmt)
    p.add_argument("--group", type=int, default=group)
    return p


def open_run(args):
    """(teacher, whole cache, its training head, teacher layers, layer kwargs, a full-depth quantised
    student's factory) for the parsed `block_args`."""
    from xtc.train import arch as archs
    from xtc.train.cache import open_cache
    from xtc.train.load import load_model
    from xtc.train.pipeline import CompressOptions, build_student, weight_quantizers
    from xtc.train.quant import quantize_linears

    teacher = load_model(args.teacher).model
    full = open_cache(args.cache)
    n_teacher = len(archs.decoder_layers(teacher))
    opts = CompressOptions(method="quant", weight_format=args.format, group_size=args.group)

    def student():
        s, _ = build_student(teacher, opts, [], list(range(n_teacher)))
        quantize_linears(s, weight_quantizers(s, opts), 8, archs.block_linear_names(s))
        return s

    return (teacher, full, full.head(full.windows - args.held_out), n_teacher,
            archs.layer_kwargs(teacher, full.seq_len), student)


def main() -> None:
    args = block_args(__doc__.splitlines()[0], "int3", 192).parse_args()

    import torch

    from xtc.train.blockwise import BlockConfig, train_blocks
    from xtc.train.reduce import spans

    torch.manual_seed(0)
    _, full, train, n_teacher, kwargs, new_student = open_run(args)
    result = {"layers": args.layers, "steps": args.steps, "format": f"{args.format} g{args.group}, A8",
              "train_windows": train.windows, "held_out_windows": args.held_out}
    for inputs in ("teacher", "student"):
        student = new_student()
        if inputs == "teacher":  # the untrained baseline: round-to-nearest with fitted grids
            result["untrained"] = chain_error(student, full, train.windows, args.layers, kwargs)
        cfg = BlockConfig(args.steps, 4, 1e-4, 1e-3, inputs)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            train_blocks(student, train, spans(list(range(n_teacher)), n_teacher)[:args.layers], kwargs, cfg, Path(tmp))
        result[inputs] = chain_error(student, full, train.windows, args.layers, kwargs)
        result[f"{inputs}_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    print("\nrelative error after each layer, held-out windows, layers run in sequence from the embeddings")
    print(f"{'layer':>5} {'untrained':>10} {'teacher':>10} {'student':>10}")
    for i in range(args.layers):
        print(f"{i:>5} {result['untrained'][i]:>10.4f} {result['teacher'][i]:>10.4f} {result['student'][i]:>10.4f}")


if __name__ == "__main__":
    main()
