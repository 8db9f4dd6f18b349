"""Do bytes spent where the measured sensitivity says buy more than bytes spent uniformly? Measured.

    .venv/bin/python benchmarks/allocation.py --cache DIR [--base int2 --group 128 --uniform-group 64]
        [--steps 16 --windows 64 --held-out 16] [--json OUT.json]

DIR is a teacher cache that `xtc compress` built (`--cache-dir`). Three full-depth students of
about the same packed size (embeddings 4-bit in groups of --embed-group in all), each trained block-wise with the same
steps and seed on the cache's first --windows windows:

- `uniform`: every matrix --base in groups of --uniform-group (the bytes spent on finer groups);
- `by-kind`: --base in groups of --group, `mlp.down_proj` one format up (a fixed rule, as
  llama.cpp's low-bit mixes give some matrix kinds more bits);
- `allocated`: --base in groups of --group, per-matrix formats chosen by `xtc.train.allocate` from
  the measured sensitivity to fit the size of `uniform` (what `xtc compress --target-mb` does).

Printed: each student's size, perplexity on the cache's last --held-out windows before training
(round-to-nearest on fitted grids) and after, and what the allocation chose.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--teacher", default="smollm2")
    p.add_argument("--base", default="int2")
    p.add_argument("--group", type=int, default=192)
    p.add_argument("--uniform-group", type=int, default=64)
    p.add_argument("--embed-group", type=int, default=96, help="4-bit embeddings in groups of this many")
    p.add_argument("--steps", type=int, default=16, help="block steps per layer")
    p.add_argument("--windows", type=int, default=64, help="cache windows trained on")
    p.add_argument("--held-out", type=int, default=16, help="last cache windows, for perplexity")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    import torch

    from xtc.core.format import Quantizer
    from xtc.train import arch as archs
    from xtc.train.allocate import allocate, describe, ladder, measure, packed_megabytes
    from xtc.train.blockwise import BlockConfig, train_blocks
    from xtc.train.cache import open_cache
    from xtc.train.e2e import perplexity
    from xtc.train.load import load_model
    from xtc.train.quant import quantize_embeddings, quantize_linears, quantizer
    from xtc.train.reduce import reduce_layers, spans

    torch.manual_seed(0)
    teacher = load_model(args.teacher).model
    cache = open_cache(args.cache)
    train = cache.head(args.windows)
    held_out = torch.from_numpy(cache.tokens[cache.windows - args.held_out:].astype("int64"))
    n = len(archs.decoder_layers(teacher))
    kwargs = archs.layer_kwargs(teacher, cache.seq_len)
    names = archs.block_linear_names(teacher)
    embed = Quantizer(16, args.embed_group)
    up = ladder(args.base)[1]

    uniform = {name: quantizer(args.base, args.uniform_group) for name in names}
    by_kind = {name: quantizer(up if name.endswith("mlp.down_proj") else args.base, args.group) for name in names}
    target_mb = packed_megabytes(teacher, uniform, embed)
    started = time.perf_counter()
    errors = measure(reduce_layers(teacher, list(range(n))), [cache.hidden[i][:4] for i in range(n)], kwargs,
                     ladder(args.base), args.group, 8)
    chosen = allocate(teacher, errors, ladder(args.base), args.group, embed, target_mb)
    result = {"teacher_held_out_perplexity": perplexity(teacher, held_out), "target_mb": round(target_mb, 3),
              "measure_seconds": round(time.perf_counter() - started, 1), "allocation": describe(chosen.formats),
              "steps": args.steps, "windows": args.windows, "held_out": args.held_out, "students": {}}
    students = {f"uniform ({args.base} g{args.uniform_group})": uniform,
                f"by-kind ({args.base} g{args.group}, down_proj {up})": by_kind,
                f"allocated ({args.base} g{args.group} + sensitivity)": {
                    name: quantizer(fmt, args.group) for name, fmt in chosen.formats.items()}}
    for label, quantizers in students.items():
        student = reduce_layers(teacher, list(range(n)))
        quantize_linears(student, quantizers, 8, names)
        quantize_embeddings(student, embed)
        row = {"mb": round(packed_megabytes(teacher, quantizers, embed), 3), "rtn_perplexity": perplexity(student, held_out)}
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            train_blocks(student, train, spans(list(range(n)), n), kwargs, BlockConfig(args.steps, 4), Path(tmp))
        row["trained_perplexity"] = perplexity(student, held_out)
        row["train_seconds"] = round(time.perf_counter() - started, 1)
        result["students"][label] = row
        print(label, json.dumps(row), flush=True)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nteacher perplexity on {args.held_out} held-out windows: {result['teacher_held_out_perplexity']:.2f}")
    print(f"{'student':<45} {'MB':>6} {'RTN ppl':>10} {'trained ppl':>12}")
    for label, row in result["students"].items():
        print(f"{label:<45} {row['mb']:>6.1f} {row['rtn_perplexity']:>10.1f} {row['trained_perplexity']:>12.2f}")


if __name__ == "__main__":
    main()
