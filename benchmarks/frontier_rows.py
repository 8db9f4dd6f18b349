"""The frontier's rows, and the one way to call `xtc`, for both runs that make a frontier of the
SmolLM2-135M teacher: benchmarks/frontier.py on the CPU (docs/results.md) and scripts/gpu/run.py
on the lent GPU (docs/GPU-RUN.md).

A row is one `xtc compress --recipe blockwise` call; ROWS holds each row's own flags in full. A run
adds only its sizes (data, time budget, --steps, --seq-len, --batch-size, the teacher cache) and
picks its rows: CPU_ROWS or GPU_ROWS (the GPU rows are the smaller set a 15-minute lease affords).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = ROOT / "benchmarks" / "data" / "line_completion_stdlib.jsonl"
RECIPE = ["--recipe", "blockwise"]  # every row of both runs

# name -> that row's `xtc compress` flags.
# CPU rows: embeddings 4-bit in groups of 96 and the 2-bit full-depth row's weights in groups of 192:
# what fits the 50 MB a shipped model may take (the sizes: docs/results.md).
_EMB96 = ["--embed-bits", "4", "--embed-group", "96"]
ROWS = {
    "hybrid-binary-15L": ["--method", "hybrid", "--keep-layers", "odd", "--weight-format", "binary", *_EMB96],
    "binary-30L": ["--method", "quant", "--weight-format", "binary", "--group-size", "64", *_EMB96],
    "int2-30L": ["--method", "quant", "--weight-format", "int2", "--group-size", "192", *_EMB96],
    "int2-23L": ["--method", "hybrid", "--keep-layers", "auto", "--student-layers", "23", "--weight-format", "int2",
                 "--group-size", "64", *_EMB96],
    "int3-30L": ["--method", "quant", "--weight-format", "int3", "--group-size", "64", *_EMB96],
    "int4-30L": ["--method", "quant", "--weight-format", "int4", "--group-size", "64", *_EMB96],
    "int3-22L": ["--method", "hybrid", "--keep-layers", "auto", "--student-layers", "22", "--weight-format", "int3",
                 "--group-size", "192", *_EMB96],
    # full depth in 50 MB: the teacher's vocabulary pruned to the 16,384 tokens the corpus uses most (sizes:
    # docs/results.md), every block matrix int2, int3 or int4 by measured sensitivity
    "mixed-30L-v16k": ["--method", "quant", "--weight-format", "int2", "--group-size", "192", "--target-mb", "49.0",
                       "--embed-bits", "4", "--embed-group", "32", "--quant-warmup", "0.5"],
    # GPU rows (the frontier of size against quality at the lease's budgets)
    "int4": ["--method", "quant", "--weight-format", "int4", "--group-size", "32", "--embed-bits", "8"],
    "int3": ["--method", "quant", "--weight-format", "int3", "--group-size", "64", "--embed-bits", "4"],
    "int2": ["--method", "quant", "--weight-format", "int2", "--group-size", "64", "--embed-bits", "4"],
    "int2-cut": ["--method", "hybrid", "--keep-layers", "auto", "--weight-format", "int2", "--group-size", "64",
                 "--embed-bits", "4"],  # a quarter of the layers dropped, chosen by measurement
    "binary-cut": ["--method", "hybrid", "--keep-layers", "auto", "--weight-format", "binary", "--group-size", "64",
                   "--embed-bits", "4"],
}
CPU_ROWS = ["hybrid-binary-15L", "binary-30L", "int2-30L", "int2-23L", "int3-30L", "int4-30L", "int3-22L",
            "mixed-30L-v16k"]
GPU_ROWS = ["int4", "int3", "int2", "int2-cut", "binary-cut"]
# rows whose teacher is first pruned to the tokens the corpus uses most (`xtc prune-vocab`): name -> tokens kept
VOCAB = {"mixed-30L-v16k": 16384}


def xtc_cmd(*args) -> list[str]:
    """The command line of `xtc ARGS` with this Python (for a call run in the background)."""
    return [sys.executable, "-m", "xtc", *map(str, args)]


def xtc_run(*args, log: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `xtc ARGS` from the repository: its command line, stderr and stdout appended to `log`;
    stdout also returned."""
    cmd = xtc_cmd(*args)
    with open(log or os.devnull, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, cwd=ROOT, env=env)
        f.write(proc.stdout)
    return proc


def xtc(*args, log: Path | None = None, env: dict | None = None) -> dict:
    """Run `xtc ARGS --json` and return its JSON object; a failed call stops the run."""
    proc = xtc_run(*args, "--json", log=log, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(proc.args)}; see {log}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
