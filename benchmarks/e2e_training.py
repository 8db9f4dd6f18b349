"""What is worth training in the end-to-end stage: scales, mins and norms only, or everything? Measured.

    .venv/bin/python benchmarks/e2e_training.py --model models/smollm2-mixed-30l --cache DIR \
        --data .venv/lib/python3.11/site-packages [--steps 30]

From one packed student, `--steps` end-to-end steps on the teacher cache DIR (`xtc compress
--cache-dir`) are run once per `--e2e` choice, same seed and batches; the perplexity on the
validation files of the corpus (the split `xtc compress` holds out, built the same way) is printed
before and after each.
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
    p.add_argument("--model", type=Path, required=True, help="packed student")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=2, help="windows per step")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the corpus the cache was built from")
    p.add_argument("--cache-tokens", type=int, default=131072, help="as `xtc compress --cache-tokens`")
    args = p.parse_args()

    from xtc.train.cache import open_cache
    from xtc.train.data import build_corpus, eval_blocks
    from xtc.train.e2e import E2EConfig, perplexity, select_trainable, train_end_to_end
    from xtc.train.pack import load_packed

    cache = open_cache(args.cache)
    student, tokenizer = load_packed(args.model)
    corpus = build_corpus(args.data, tokenizer, args.cache_tokens, exclude=ROOT / "benchmarks" / "data"
                          / "line_completion_stdlib.jsonl")
    held_out = eval_blocks(corpus.val, cache.seq_len)
    result = {"model": str(args.model), "steps": args.steps, "batch_windows": args.batch_size,
              "validation_tokens": int(held_out.numel())}
    for i, train_what in enumerate(("scales", "all")):
        if i:  # every choice starts from the packed student
            student, _ = load_packed(args.model)
        result.setdefault("before", round(perplexity(student, held_out), 3))
        result[f"{train_what}_parameters"] = select_trainable(student, train_what)
        cfg = E2EConfig(args.steps, args.batch_size, train=train_what)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            fit = train_end_to_end(student, cache, cfg, Path(tmp) / "e2e.pt")
        result[train_what] = {"perplexity": round(perplexity(student, held_out), 3),
                              "first_loss": round(fit.first_loss, 4), "final_loss": round(fit.final_loss, 4),
                              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
