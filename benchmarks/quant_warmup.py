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

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.block_inputs import block_args, chain_error, open_run  # noqa: E402


def main() -> None:
    p = block_args(__doc__.splitlines()[0], "int2", 64)
    p.add_argument("--warmups", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    args = p.parse_args()

    import torch

    from xtc.train.blockwise import BlockConfig, train_blocks
    from xtc.train.reduce import spans

    _, full, train, n_teacher, kwargs, new_student = open_run(args)
    result = {"layers": args.layers, "steps": args.steps, "format": f"{args.format} g{args.group}, A8",
              "train_windows": train.windows, "held_out_windows": args.held_out, "errors": {}, "seconds": {}}
    for warmup in args.warmups:
        torch.manual_seed(0)
        student = new_student()
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
