"""Throughput and memory of the block-wise recipe's stages on this machine, each in its own process.

    .venv/bin/python benchmarks/recipe_throughput.py [--teacher smollm2] [--seq-len 512] [--format int3]

- teacher cache: the teacher's forward pass over windows, states and top-k logits written to disk;
- block stage: one student layer (quantisers in the loop) trained on cached windows: forward,
  backward and the optimiser step;
- end-to-end stage: the whole quantised student on cached logits, training scales (`--e2e scales`)
  or everything.

Prints tokens per second and the peak resident memory of each stage's process (the cache is
memory-mapped, so that is what the stage itself needs), and the threads used.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stage(args) -> dict:
    import torch

    from xtc.core.format import Quantizer
    from xtc.train import arch as archs
    from xtc.train.blockwise import block_loss
    from xtc.train.cache import batch, create_cache, fill_cache, open_cache
    from xtc.train.e2e import select_trainable, topk_cross_entropy
    from xtc.train.load import load_model
    from xtc.train.quant import quantize_embeddings, quantize_linears, quantizer
    from xtc.train.reduce import reduce_layers

    teacher = load_model(args.teacher).model
    for p in teacher.parameters():
        p.requires_grad_(False)
    cache_dir = Path(args.cache)
    n_tokens = args.windows * args.seq_len
    if args.stage == "cache":
        windows = torch.randint(0, teacher.config.vocab_size, (args.windows, args.seq_len)).numpy()
        cache = create_cache(cache_dir, windows, len(archs.decoder_layers(teacher)) + 1, teacher.config.hidden_size, 64)
        t = time.perf_counter()
        fill_cache(cache, teacher, batch_size=4)
        return {"tokens_per_s": n_tokens / (time.perf_counter() - t)}
    cache = open_cache(cache_dir)
    index = list(range(min(args.batch_size, cache.windows)))
    student = reduce_layers(teacher, list(range(len(archs.decoder_layers(teacher)))))
    quantize_linears(student, quantizer(args.format, args.group), 8, archs.block_linear_names(student))
    if args.stage == "block":
        layer = archs.decoder_layers(student)[0].train()
        kwargs = archs.layer_kwargs(teacher, cache.seq_len)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-5)

        def step():
            block_loss(archs.run_layer(layer, batch(cache.hidden[0], index), kwargs), batch(cache.hidden[1], index)).backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        quantize_embeddings(student, Quantizer(16, 32))
        select_trainable(student, args.e2e)
        optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)

        def step():
            logits = student(input_ids=batch(cache.tokens, index)).logits
            topk_cross_entropy(logits, batch(cache.topk_ids, index), batch(cache.topk_logits, index)).backward()
            optimizer.step()
            optimizer.zero_grad()
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - t) / args.steps
    return {"tokens_per_s": len(index) * cache.seq_len / seconds, "seconds_per_step": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="smollm2")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--windows", type=int, default=16, help="windows the cache pass runs over")
    p.add_argument("--batch-size", type=int, default=4, help="windows per training step")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--format", default="int3")
    p.add_argument("--group", type=int, default=64)
    p.add_argument("--e2e", choices=("scales", "all"), default="scales")
    p.add_argument("--stage", choices=("cache", "block", "e2e"), help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage:  # a worker: one stage in this process
        result = stage(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        import torch

        result["threads"] = torch.get_num_threads()
        print(json.dumps(result))
        return 0
    rows = {}
    with tempfile.TemporaryDirectory(prefix="xtc-throughput-") as tmp:
        for name in ("cache", "block", "e2e"):
            cmd = [sys.executable, __file__, "--stage", name, "--cache", str(Path(tmp) / "cache"),
                   *[a for a in (argv if argv is not None else sys.argv[1:])]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:>6}: {rows[name]['tokens_per_s']:8.0f} tokens/s, peak RSS {rows[name]['peak_rss_mb']:6.0f} MB, "
                  f"{rows[name]['threads']} threads", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
