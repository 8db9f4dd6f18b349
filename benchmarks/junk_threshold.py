"""The shown-share / exact-match curve of the `unsure` rule: from predictions files of `xtc eval`
(their `mean_logprob` column), the share of suggestions a threshold keeps and their exact match.

    python benchmarks/junk_threshold.py PREDICTIONS.jsonl [...] [--out docs/results/junk_threshold.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

THRESHOLDS = [None, -0.25, -0.5, -0.75, -1.0, -1.25, -1.5, -2.0, -2.5, -3.0]


def curve(rows: list[dict]) -> list[dict]:
    rows = [r for r in rows if "mean_logprob" in r and r["prediction"].strip()]
    out = []
    for t in THRESHOLDS:
        shown = [r for r in rows if t is None or r["mean_logprob"] >= t]
        hidden = [r for r in rows if r not in shown]
        out.append({"threshold": t, "shown": round(100 * len(shown) / max(1, len(rows)), 1),
                    "em_shown": round(100 * sum(r["em"] for r in shown) / max(1, len(shown)), 1),
                    "em_hidden": round(100 * sum(r["em"] for r in hidden) / max(1, len(hidden)), 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {}
    for path in args.predictions:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        result[path.stem] = curve(rows)
        print(path.stem)
        for row in result[path.stem]:
            print(f"  threshold {row['threshold']!s:>6}: shown {row['shown']:5.1f}%  EM of shown {row['em_shown']:5.1f}"
                  f"  EM of hidden {row['em_hidden']:5.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
