"""What the embedding table costs, and what pruning the vocabulary keeps. Measured.

    .venv/bin/python benchmarks/vocab_pruning.py --cache DIR --data .venv/lib/python3.11/site-packages \
        [--teacher smollm2] [--count-tokens 1000000] [--sizes 8192 12288 16384 24576]

1. Teacher perplexity on the cache's last --windows windows (DIR: a teacher cache `xtc compress`
   built) with only its embedding table (which doubles as the head) quantised, per bits and group.
2. For each --sizes, the share of the corpus's tokens (--count-tokens of its training split, and
   of its validation split) that `xtc prune-vocab` would keep.
3. How many tokens the stdlib's textwrap.py takes with the full and with a pruned vocabulary.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EMBEDDINGS = [(None, None), (4, 96), (4, 64), (4, 32), (3, 96), (3, 32)]  # (bits, group); None: fp32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--teacher", default="smollm2")
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--count-tokens", type=int, default=1_000_000)
    p.add_argument("--sizes", type=int, nargs="+", default=[8192, 12288, 16384, 24576])
    args = p.parse_args()

    import numpy as np
    import torch
    from tokenizers import Tokenizer

    from xtc.core.format import Quantizer
    from xtc.train.cache import open_cache
    from xtc.train.data import build_corpus
    from xtc.train.load import load_model
    from xtc.train.quant import quantize_embeddings
    from xtc.train.vocab import choose_tokens, count_tokens, prune_tokenizer_json

    tokens = torch.from_numpy(np.asarray(open_cache(args.cache).tokens[-args.windows:], dtype=np.int64))
    for bits, group in EMBEDDINGS:
        loaded = load_model(args.teacher)
        model = loaded.model.float().eval()
        if bits:
            quantize_embeddings(model, Quantizer(2 ** bits, group))
        with torch.no_grad():
            loss = np.mean([model(tokens[i:i + 4], labels=tokens[i:i + 4]).loss.item() for i in range(0, len(tokens), 4)])
        print(f"embedding {f'{bits}-bit g{group}' if bits else 'fp32'}: teacher perplexity {np.exp(loss):.3f}", flush=True)

    tokenizer = loaded.tokenizer
    vocab_size = model.get_input_embeddings().weight.shape[0]
    corpus = build_corpus(args.data, tokenizer, args.count_tokens, exclude=ROOT / "benchmarks" / "data" /
                          "line_completion_stdlib.jsonl")
    train, val = count_tokens(corpus.train, vocab_size), count_tokens(corpus.val, vocab_size)
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())
    print(f"corpus: {corpus.describe()}; {int((train > 0).sum()):,} distinct tokens in the training split")
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")
    full_len = len(tokenizer(text)["input_ids"])
    for size in args.sizes:
        keep = choose_tokens(tokenizer_json, train, size)
        pruned = Tokenizer.from_str(json.dumps(prune_tokenizer_json(tokenizer_json, keep)))
        print(f"{size:>6} tokens: {len(keep):,} kept, {100 * train[keep].sum() / train.sum():.2f}% of training tokens, "
              f"{100 * val[keep].sum() / val.sum():.2f}% of validation tokens; textwrap.py {full_len:,} -> "
              f"{len(pruned.encode(text).ids):,} tokens", flush=True)


if __name__ == "__main__":
    main()
