"""Workspace context on the benchmarks: `xtc eval` without and with `--workspace`, for the
retrievers, layouts and token budgets, one row per run in docs/results/workspace_context.json.

    python benchmarks/workspace_context.py [--only NAME ...] [--predictions-dir DIR]

Each run keeps a predictions file (resumable: a killed run continues) whose `mean_logprob` column
also gives the shown-share / exact-match curve of `benchmarks/junk_threshold.py`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB = sysconfig.get_paths()["stdlib"]
CROSS = ROOT / "benchmarks" / "data" / "cross_file_stdlib.jsonl"
RANDOM = ROOT / "benchmarks" / "data" / "line_completion_stdlib.jsonl"
OUT = ROOT / "docs" / "results" / "workspace_context.json"
STUDENT, TEACHER = "smollm2-mixed-30l", "smollm2"

# name: (model, benchmark, limit, workspace options or None)
RUNS = {
    "student-cross-none": (STUDENT, CROSS, None, None),
    "student-cross-bm25-repo-512": (STUDENT, CROSS, None, ["--retriever", "bm25", "--layout", "repo", "--workspace-tokens", "512"]),
    "student-random200-none": (STUDENT, RANDOM, 200, None),
    "student-random200-bm25-repo-512": (STUDENT, RANDOM, 200, ["--workspace-tokens", "512"]),
    "student-cross100-jaccard-repo-512": (STUDENT, CROSS, 100, ["--retriever", "jaccard", "--workspace-tokens", "512"]),
    "student-cross100-bm25-comment-512": (STUDENT, CROSS, 100, ["--layout", "comment", "--workspace-tokens", "512"]),
    "student-cross100-bm25-repo-256": (STUDENT, CROSS, 100, ["--workspace-tokens", "256"]),
    "student-cross100-bm25-repo-1024": (STUDENT, CROSS, 100, ["--workspace-tokens", "1024"]),
    "teacher-cross100-none": (TEACHER, CROSS, 100, None),
    "teacher-cross100-bm25-repo-512": (TEACHER, CROSS, 100, ["--workspace-tokens", "512"]),
    "teacher-cross-none": (TEACHER, CROSS, None, None),
    "teacher-cross-bm25-repo-512": (TEACHER, CROSS, None, ["--workspace-tokens", "512"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS))
    parser.add_argument("--predictions-dir", type=Path, default=Path("/tmp/xtc-workspace-context"))
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in args.only or RUNS:
        model, benchmark, limit, options = RUNS[name]
        command = [sys.executable, "-m", "xtc.cli", "eval", "--model", model, "--benchmark", str(benchmark), "--json",
                   "--predictions", str(args.predictions_dir / f"{name}.jsonl")]
        command += ["--limit", str(limit)] if limit else []
        command += ["--workspace", STDLIB, *options] if options is not None else []
        started = time.time()
        out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        result = json.loads(out)
        result["wall_s"] = round(time.time() - started, 1)
        results[name] = result
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name}: EM {result['exact_match']:.1f} ES {result['edit_similarity']:.1f} n={result['n']}", flush=True)


if __name__ == "__main__":
    main()
