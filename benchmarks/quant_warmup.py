"""Does a gradual quantisation warm-up help the block stage? Measured.

    .venv/bin/python benchmarks/quant_warmup.py --cache DIR [--layers 6] [--steps 100]
        [--format int2 --group 64] [--warmups 0 0.25 0.5]

DIR is a teacher cache that `xtc compress` built (`--cache-dir`). The first --layers layers of the
full-depth student are trained block-wise (the student's own inputs, the default) once per
`--quant-warmup` share, same steps and seed, on all but the cache's last --held-out windows; then
the quantised layers run in sequence from the cached embeddings over those held-out windows and
the relative error against the teacher's hidden state is printed after each layer (as
`block_inputs.py` does).
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

from benchmarks.block_inputs import chain_error  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--teacher", default="smollm2")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--held-out", type=int, default=16, help="windows kept out of training")
    p.add_argument("--format", default="int2")
    p.add_argument("--group", type=int, default=64)
    p.add_argument("--warmups", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    args = p.parse_args()

    import torch

    from xtc.train import arch as archs
    from xtc.train.blockwise import BlockConfig, train_blocks
    from xtc.train.cache import open_cache
    from xtc.train.load import load_model
    from xtc.train.pipeline import CompressOptions, build_student, weight_quantizers
    from xtc.train.quant import quantize_linears
    from xtc.train.reduce import spans

    teacher = load_model(args.teacher).model
    full = open_cache(args.cache)
    train = full.head(full.windows - args.held_out)
    n_teacher = len(archs.decoder_layers(teacher))
    kwargs = archs.layer_kwargs(teacher, full.seq_len)
    opts = CompressOptions(method="quant", weight_format=args.format, group_size=args.group)
    result = {"layers": args.layers, "steps": args.steps, "format": f"{args.format} g{args.group}, A8",
              "train_windows": train.windows, "held_out_windows": args.held_out, "errors": {}, "seconds": {}}
    for warmup in args.warmups:
        torch.manual_seed(0)
        student, _ = build_student(teacher, opts, [], list(range(n_teacher)))
        quantize_linears(student, weight_quantizers(student, opts), 8, archs.block_linear_names(student))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            train_blocks(student, train, spans(list(range(n_teacher)), n_teacher)[:args.layers], kwargs,
                         BlockConfig(args.steps, 4, 1e-4, 1e-3, warmup=warmup), Path(tmp))
        result["errors"][str(warmup)] = chain_error(student, full, train.windows, args.layers, kwargs)
        result["seconds"][str(warmup)] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    print("\nrelative error after each layer, held-out windows, layers run in sequence from the embeddings")
    print(f"{'layer':>5} " + " ".join(f"{'warm-up ' + w:>12}" for w in result["errors"]))
    for i in range(args.layers):
        print(f"{i:>5} " + " ".join(f"{e[i]:>12.4f}" for e in result["errors"].values()))


if __name__ == "__main__":
    main()
