"""The compression recipes, from a teacher on disk to a packed student.

What is compressed (`--method`): `layer` (fewer layers, fp32), `quant` (quantised weights and
8-bit activations, full depth), `hybrid` (both). How it is trained (`--recipe`):

- `blockwise` (default; what a CPU affords):
    1. teacher cache: one teacher pass over the corpus windows, stored on disk (`cache.py`);
    2. layer choice: odd/even/list, or `auto`, measured on the cached states (`reduce.py`);
    3. block-wise distillation: every student layer, quantisers in the loop, learns its teacher
       span's output from the student's (or teacher's) input (`blockwise.py`);
    4. end-to-end: the assembled student, embeddings quantised, against the cached top-k logits
       (`e2e.py`).
  `--time-budget` is split: the cache up to a fifth, the rest between blocks and end-to-end
  (`--e2e-share`); with `--steps auto` the steps of each stage are sized to its share from timed
  steps. Everything is checkpointed under OUT/checkpoints, so `--resume` continues a killed run.
- `xtc`: the XTC paper's recipe, end-to-end distillation with the teacher in the loop
  (`distill.py`); `hybrid` runs a layer stage, then a quantisation stage from its result.

Checkpoints are removed once the packed model is written from a finished run.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.format import Quantizer, weight_files_mb
from xtc.train import arch as archs
from xtc.train.allocate import allocate, describe, ladder, measure
from xtc.train.blockwise import BlockConfig, block_loss, train_blocks, summary as block_summary
from xtc.train.cache import TeacherCache, batch, create_cache, fill_cache, open_cache, windows_of
from xtc.train.data import build_corpus, eval_blocks
from xtc.train.distill import StageResult, TrainConfig, distill, pick_device, plot_losses
from xtc.train.e2e import E2EConfig, perplexity, train_end_to_end
from xtc.train.fit import FitResult
from xtc.train.load import load_model
from xtc.train.pack import save_packed
from xtc.train.quant import FORMATS, quantize_embeddings, quantize_linears, quantizer
from xtc.train.reduce import choose_layers, reduce_layers, select_layers, spans


@dataclass
class CompressOptions:
    method: str = defaults.METHOD
    recipe: str = defaults.RECIPE
    keep_layers: str = defaults.KEEP_LAYERS
    student_layers: int | None = None  # with keep_layers="auto"; default: defaults.AUTO_KEEP of the teacher's
    weight_format: str = defaults.WEIGHT_FORMAT
    weight_formats: dict[str, str] = field(default_factory=dict)  # per matrix, e.g. {"mlp.down_proj": "int4"}
    group_size: int | None = None
    act_bits: int | None = defaults.ACT_BITS
    embed_bits: int = defaults.EMBED_BITS
    embed_group: int | None = None  # 4-bit tables: default defaults.EMBED_GROUP
    max_tokens: int | None = defaults.MAX_CORPUS_TOKENS
    decontaminate: str | Path | None = None  # a benchmark (JSON Lines): corpus files holding its items are dropped
    resume: bool = False
    keep_checkpoints: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    # the block-wise recipe
    auto_steps: bool = False  # size each stage's steps to its share of the time budget
    block_inputs: str = defaults.BLOCK_INPUTS
    block_lr: float = defaults.BLOCK_LR
    quant_warmup: float = defaults.QUANT_WARMUP  # share of each block's steps that ramps the quantisation in
    e2e: str = defaults.E2E_TRAIN
    e2e_steps: int | None = None  # default: --steps
    e2e_share: float = defaults.E2E_SHARE
    cache_tokens: int = defaults.CACHE_TOKENS
    topk: int = defaults.TOPK
    cache_dir: Path | None = None  # a teacher cache shared between runs (default: OUT/checkpoints/cache)
    target_mb: float | None = None  # per-matrix formats by measured sensitivity, fitting this size (allocate.py)
    init: str = defaults.INIT  # block-wise: each quantised layer's start, "rtn" or "gptq" (gptq.py)


def fp32_megabytes(model: nn.Module) -> float:
    """Size of the model's unique parameters stored as fp32 (the teacher baseline of the tables)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * 4
    return total / 1e6


def stages(method: str) -> list[str]:
    """The XTC recipe's stages for a method."""
    if method not in defaults.METHODS:
        raise XtcError(f"--method must be one of {', '.join(defaults.METHODS)}, not {method!r}")
    return {"layer": ["layer"], "quant": ["quant"], "hybrid": ["layer", "quant"]}[method]


def weight_quantizers(student: nn.Module, opts: CompressOptions,
                      allocated: dict[str, str] | None = None) -> dict[str, Quantizer]:
    """Every block linear's Quantizer: its `allocated` format (by dotted name), else a per-matrix
    override whose key ends the module's name (`mlp.down_proj=int4`), else `--weight-format`."""
    for fmt in [opts.weight_format, *opts.weight_formats.values()]:
        if fmt not in FORMATS:
            raise XtcError(f"unknown weight format {fmt!r}: one of {', '.join(FORMATS)}")
    out = {}
    for name in archs.block_linear_names(student):
        fmt = (allocated or {}).get(name) or next(
            (f for key, f in opts.weight_formats.items() if name.endswith(key)), opts.weight_format)
        width = archs.as_linear(student.get_submodule(name)).in_features
        if opts.group_size and width % opts.group_size:
            raise XtcError(f"--group-size {opts.group_size} does not divide {name}'s input width {width}")
        out[name] = quantizer(fmt, opts.group_size)
    return out


def embed_quantizer(opts: CompressOptions) -> Quantizer:
    """8-bit tables keep a scale and min per row; 4-bit ones per group of 32 by default (measured on
    SmolLM2: RTN perplexity 11.44 with groups of 32 against 11.87 with 64, teacher 10.90)."""
    if opts.embed_bits >= 8:
        return Quantizer(2 ** opts.embed_bits, opts.embed_group)
    return Quantizer(2 ** opts.embed_bits, opts.embed_group or defaults.EMBED_GROUP)


def build_student(teacher: nn.Module, opts: CompressOptions, stage_names: list[str],
                  kept: list[int] | None = None) -> tuple[nn.Module, list[int]]:
    """The student's structure after the given stages (weights initialised from the teacher)."""
    n_layers = len(archs.decoder_layers(teacher))
    if kept is None:
        kept = select_layers(n_layers, opts.keep_layers) if "layer" in stages(opts.method) else list(range(n_layers))
    student = reduce_layers(teacher, kept)
    if "quant" in stage_names:
        quantize_linears(student, weight_quantizers(student, opts), opts.act_bits, archs.block_linear_names(student))
        quantize_embeddings(student, embed_quantizer(opts))
    return student, kept


def compress(teacher_src: str, data_dirs: list[Path], out_dir: Path, opts: CompressOptions) -> dict:
    """Run the recipe and write the packed model; returns the summary `compress` prints."""
    stages(opts.method)
    if opts.recipe not in defaults.RECIPES:
        raise XtcError(f"--recipe must be one of {', '.join(defaults.RECIPES)}, not {opts.recipe!r}")
    if opts.init not in defaults.INITS:
        raise XtcError(f"--init must be one of {', '.join(defaults.INITS)}, not {opts.init!r}")
    if opts.init != defaults.INIT and (opts.recipe != "blockwise" or opts.method == "layer"):
        raise XtcError(f"--init {opts.init} sets the start of block-wise training: it needs --recipe blockwise "
                       "and a quantised --method (quant or hybrid)")
    if opts.target_mb is not None:
        if opts.recipe != "blockwise" or opts.method == "layer":
            raise XtcError("--target-mb allocates bit widths on the teacher cache: it needs --recipe blockwise "
                           "and a quantised --method (quant or hybrid)")
        if opts.weight_formats:
            raise XtcError("give --target-mb or --weight-format-for, not both")
        ladder(opts.weight_format)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if out_dir.exists() and any(out_dir.iterdir()) and not opts.resume:
        if ckpt_dir.exists():
            raise XtcError(f"{out_dir} holds an unfinished run: add --resume to continue it, or pick another --out")
        if (out_dir / "config.json").exists():
            raise XtcError(f"{out_dir} already holds a model: pick another --out")
    started = time.monotonic()
    deadline = started + opts.train.time_budget_s if opts.train.time_budget_s else None
    loaded = load_model(teacher_src)
    if loaded.packed:
        raise XtcError(f"{teacher_src} is already a compressed model; give the original teacher")
    teacher = loaded.model
    for p in teacher.parameters():
        p.requires_grad_(False)
    if opts.method != "layer":  # refuse formats that do not fit the shapes before any work is done
        weight_quantizers(teacher, opts)
        width, group = teacher.config.hidden_size, embed_quantizer(opts).group
        if group and width % group:
            raise XtcError(f"--embed-group {group} does not divide the embedding width {width}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training").mkdir(exist_ok=True)
    run = _blockwise if opts.recipe == "blockwise" else _xtc
    student, kept, corpus, rows, finished, extra = run(teacher, loaded.tokenizer, data_dirs, out_dir, opts, deadline)
    meta = {"method": opts.method, "recipe": opts.recipe, "kept_layers": kept, "teacher": loaded.path,
            "teacher_layers": len(archs.decoder_layers(teacher)), "corpus": corpus.describe(),
            "train": asdict(opts.train), "stages": rows}
    for f in ("config.json", "model.safetensors"):
        (out_dir / f).unlink(missing_ok=True)
    save_packed(student, loaded.tokenizer, out_dir, meta)
    if not opts.keep_checkpoints and finished:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    teacher_mb = fp32_megabytes(teacher)
    packed_mb = weight_files_mb(out_dir)
    summary = {
        "out": str(out_dir), "method": opts.method, "recipe": opts.recipe, "teacher": loaded.path,
        "kept_layers": kept, "teacher_fp32_mb": round(teacher_mb, 3), "packed_mb": round(packed_mb, 3),
        "ratio": round(teacher_mb / packed_mb, 2) if packed_mb else None, "finished": finished,
        "stages": rows, **extra, "seconds": round(time.monotonic() - started, 1), "corpus": corpus.describe(),
    }
    (out_dir / "training" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# -- the XTC recipe: end-to-end distillation with the teacher in the loop ---------------------------
def _xtc(teacher, tokenizer, data_dirs, out_dir: Path, opts: CompressOptions, deadline):
    plan = stages(opts.method)
    if opts.train.attn_weight:
        teacher.set_attn_implementation("eager")
    corpus = build_corpus(data_dirs, tokenizer, opts.max_tokens, seed=opts.train.seed, exclude=opts.decontaminate)
    results: list[StageResult] = []
    student, kept = build_student(teacher, opts, plan[:1])
    for i, stage in enumerate(plan):
        if i > 0:  # hybrid's second stage: quantise the layer-reduced student and continue
            quantize_linears(student, weight_quantizers(student, opts), opts.act_bits,
                             archs.block_linear_names(student))
            quantize_embeddings(student, embed_quantizer(opts))
        for p in student.parameters():
            p.requires_grad_(True)
        stage_deadline = None
        if deadline is not None:
            stage_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(plan) - i)
        results.append(distill(teacher, student, corpus, kept, opts.train, out_dir / "checkpoints" / f"{stage}.pt",
                               out_dir / "training" / f"log.{stage}.jsonl", name=stage, deadline=stage_deadline))
    plot_losses([out_dir / "training" / f"log.{s}.jsonl" for s in plan], out_dir / "training" / "loss_curve.png",
                f"XTC {opts.method}")
    rows = [{"stage": r.name, "steps": r.steps_done, "finished": r.finished, "seconds": round(r.seconds, 1),
             "final_train_loss": None if r.final_train_loss is None else round(r.final_train_loss, 4), **r.val}
            for r in results]
    return student, kept, corpus, rows, all(r.finished for r in results), {}


# -- the block-wise recipe ------------------------------------------------------------------------------
def _share(deadline: float | None, fraction: float, reserve_s: float = 0.0) -> float | None:
    """A deadline `fraction` of the way from now to `deadline` (less a reserve kept for the end)."""
    if deadline is None:
        return None
    return time.monotonic() + max(0.0, deadline - reserve_s - time.monotonic()) * fraction


def _blockwise(teacher, tokenizer, data_dirs, out_dir: Path, opts: CompressOptions, deadline):
    ckpt = out_dir / "checkpoints"
    cfg = opts.train
    budget = cfg.time_budget_s or 0.0
    reserve = min(30.0, 0.1 * budget) + 0.02 * budget  # packing, validation, the summary
    device = pick_device(cfg.device)
    corpus = build_corpus(data_dirs, tokenizer, opts.cache_tokens, seed=cfg.seed, exclude=opts.decontaminate)
    cache_dir = opts.cache_dir or ckpt / "cache"
    if (ckpt / "plan.json").exists():  # training has started on this cache: keep it as it was
        plan = json.loads((ckpt / "plan.json").read_text())
        plan.setdefault("init", defaults.INIT)  # plans written before --init existed
        if plan["init"] != opts.init:
            raise XtcError(f"{out_dir} was started with --init {plan['init']}: resume it with the same --init")
        cache = open_cache(cache_dir).head(plan["windows"])
    else:
        cache = _teacher_cache(teacher, corpus, cache_dir, opts, _share(deadline, 0.2, reserve), device)
        plan = _plan(ckpt / "plan.json", teacher, cache, opts)
    kept = plan["kept"]
    quantised = opts.method != "layer"
    student, _ = build_student(teacher, opts, [], kept)
    student.to(device)
    kwargs = archs.layer_kwargs(teacher.to(device), cache.seq_len, device)
    if quantised:
        if opts.target_mb is not None and "formats" not in plan:
            plan["formats"] = _allocated_formats(student, cache, plan["spans"], kwargs, opts, device,
                                                 out_dir / "training" / "allocation.json")
            _save_plan(ckpt / "plan.json", plan)
        quantize_linears(student, weight_quantizers(student, opts, plan.get("formats")), opts.act_bits,
                         archs.block_linear_names(student))
        student.to(device)
    block_cfg = BlockConfig(plan["block_steps"], min(cfg.batch_size, cache.windows), opts.block_lr, 10 * opts.block_lr,
                            opts.block_inputs, opts.quant_warmup, cfg.seed, cfg.progress, device, plan["init"])
    if opts.auto_steps and plan["block_steps"] is None:
        plan["block_steps"] = block_cfg.steps = _calibrated_block_steps(
            student, cache, plan["spans"], kwargs, block_cfg, _share(deadline, 1 - opts.e2e_share, reserve))
        _save_plan(ckpt / "plan.json", plan)
    blocks = train_blocks(student, cache, plan["spans"], kwargs, block_cfg, ckpt / "blocks",
                          _share(deadline, 1 - opts.e2e_share, reserve))
    blocks_done = len(blocks) == len(kept) and all(r.finished for r in blocks)
    if quantised:
        quantize_embeddings(student, embed_quantizer(opts))
        student.to(device)
    e2e_cfg = E2EConfig(plan["e2e_steps"] or 0, max(1, min(cfg.batch_size // 4, cache.windows)), cfg.lr / 10,
                        opts.block_lr, opts.e2e if quantised else "all", cfg.temperature, cfg.seed, cfg.progress,
                        device)
    e2e, before_e2e = None, None
    val = eval_blocks(corpus.val, cache.seq_len)
    if blocks_done and opts.e2e != "none":
        if opts.auto_steps and plan["e2e_steps"] is None:
            plan["e2e_steps"] = e2e_cfg.steps = _calibrated_e2e_steps(student, cache, e2e_cfg, _share(deadline, 1.0, reserve))
            _save_plan(ckpt / "plan.json", plan)
        if e2e_cfg.steps:  # what the stage buys is measured, not assumed
            before_e2e = round(perplexity(student, val), 3)
            e2e = train_end_to_end(student, cache, e2e_cfg, ckpt / "e2e.pt", _share(deadline, 1.0, reserve),
                                   out_dir / "training" / "log.e2e.jsonl")
    finished = blocks_done and (e2e.finished if e2e is not None else True)
    extra = {"val_perplexity": round(perplexity(student, val), 3),
             "teacher_val_perplexity": round(perplexity(teacher, val), 3), "cache": cache.describe()}
    if plan.get("formats"):
        extra["allocation"] = describe(plan["formats"])
    student.to("cpu")
    teacher.to("cpu")
    _plot(blocks, e2e, out_dir / "training" / "loss_curve.png", f"{opts.method}, block-wise")
    (out_dir / "training" / "blocks.json").write_text(json.dumps(block_summary(blocks), indent=1) + "\n")
    rows = [{"stage": "cache", "windows": cache.windows, "finished": cache.complete},
            {"stage": "blocks", "steps": plan["block_steps"], "layers_done": sum(r.finished for r in blocks),
             "finished": blocks_done, "seconds": round(sum(r.seconds for r in blocks), 1),
             "init": plan["init"], "init_seconds": round(sum(r.init_seconds for r in blocks), 2),
             "final_train_loss": _mean([r.final_loss for r in blocks])}]
    if e2e is not None:
        rows.append({"stage": "e2e", "steps": e2e.steps_done, "finished": e2e.finished, "seconds": round(e2e.seconds, 1),
                     "train": e2e_cfg.train, "first_train_loss": e2e.first_loss, "final_train_loss": e2e.final_loss,
                     "val_perplexity_before": before_e2e})
    return student, kept, corpus, rows, finished, extra


def _teacher_cache(teacher, corpus, path: Path, opts: CompressOptions, deadline, device: str) -> TeacherCache:
    """Open (or build, or complete) the teacher cache; at the deadline the windows done so far are used."""
    windows = windows_of(corpus.train, opts.train.seq_len, max(1, opts.cache_tokens // opts.train.seq_len))
    if (path / "progress.json").exists():
        cache = open_cache(path)
        if cache.tokens.shape != windows.shape or not np.array_equal(cache.tokens[:1], windows[:1]):
            # another teacher's tokenizer (a pruned vocabulary), corpus, --seq-len or --cache-tokens
            raise XtcError(f"--cache-dir {path}: a teacher cache of other token windows than this run's "
                           "(teacher tokenizer, data, --seq-len, --cache-tokens); give another directory")
    else:
        cache = create_cache(path, windows, len(archs.decoder_layers(teacher)) + 1, teacher.config.hidden_size,
                             min(opts.topk, teacher.config.vocab_size))
    cache = fill_cache(cache, teacher, batch_size=4, deadline=deadline, device=device, progress=opts.train.progress)
    return cache if cache.complete else cache.head(max(1, cache.done))


def _allocated_formats(student, cache: TeacherCache, layer_spans, kwargs, opts: CompressOptions, device: str,
                       report: Path) -> dict[str, str]:
    """Per-matrix formats for `--target-mb`, measured on the first cache windows (report: errors and choice)."""
    windows = min(defaults.ALLOCATE_WINDOWS, cache.windows)
    inputs = [cache.hidden[start][:windows] for start, _ in layer_spans]
    formats = ladder(opts.weight_format)
    errors = measure(student, inputs, kwargs, formats, opts.group_size, opts.act_bits, device)
    chosen = allocate(student, errors, formats, opts.group_size, embed_quantizer(opts), opts.target_mb)
    report.write_text(json.dumps({"target_mb": opts.target_mb, "estimated_mb": round(chosen.megabytes, 3),
                                  "by_matrix": describe(chosen.formats), "formats": chosen.formats,
                                  "errors": chosen.errors}, indent=1) + "\n")
    return chosen.formats


def _plan(path: Path, teacher, cache: TeacherCache, opts: CompressOptions) -> dict:
    """The run's fixed decisions (cache windows, kept layers, steps), chosen once, reused by --resume."""
    n_layers = len(archs.decoder_layers(teacher))
    if opts.method == "quant":
        kept = list(range(n_layers))
    elif opts.keep_layers == "auto":
        n_keep = opts.student_layers or max(1, round(n_layers * defaults.AUTO_KEEP))
        kept = choose_layers(cache.hidden, n_keep)
    else:
        kept = select_layers(n_layers, opts.keep_layers)
    steps = None if opts.auto_steps else opts.train.steps
    e2e_steps = None if opts.auto_steps else (opts.e2e_steps if opts.e2e_steps is not None else opts.train.steps)
    plan = {"windows": cache.windows, "kept": kept, "spans": spans(kept, n_layers), "block_steps": steps,
            "e2e_steps": e2e_steps, "init": opts.init}
    _save_plan(path, plan)
    return plan


def _save_plan(path: Path, plan: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan) + "\n")


def _seconds_per_step(step, warm: int = 1, timed: int = 2) -> float:
    def run() -> None:
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: time its end, not its launch

    for _ in range(warm):
        run()
    t = time.perf_counter()
    for _ in range(timed):
        run()
    return (time.perf_counter() - t) / timed


def _calibrated_block_steps(student, cache: TeacherCache, layer_spans, kwargs, cfg: BlockConfig, deadline) -> int:
    """Steps per layer that fill the block stage's share of the budget (timed on a copy of layer 0;
    every layer costs the same, plus one forward pass over the cache per layer for the student's inputs
    and one for GPTQ's Hessians)."""
    layer = copy.deepcopy(archs.decoder_layers(student)[0]).train()
    optimizer = torch.optim.AdamW([p for p in layer.parameters()], lr=0.0)
    x, y = cache.hidden[layer_spans[0][0]], cache.hidden[layer_spans[0][1]]
    index = list(range(min(cfg.batch_size, cache.windows)))

    def step() -> None:
        for p in layer.parameters():
            p.requires_grad_(True)
        out = archs.run_layer(layer, batch(x, index, cfg.device), kwargs)
        block_loss(out, batch(y, index, cfg.device)).backward()
        optimizer.step()
        optimizer.zero_grad()

    per_step = _seconds_per_step(step)
    passes = (cfg.inputs == "student") + (cfg.init == "gptq")
    forward = passes * per_step / 3 * cache.windows / len(index)
    left = 0.9 * (deadline - time.monotonic()) if deadline is not None else 0.0  # 10%: checkpoints, slow steps
    return max(1, int((left / len(layer_spans) - forward) / per_step))


def _calibrated_e2e_steps(student, cache: TeacherCache, cfg: E2EConfig, deadline) -> int:
    """End-to-end steps that fill what is left of the budget (timed on a copy of the student)."""
    from xtc.train.e2e import select_trainable, topk_cross_entropy

    model = copy.deepcopy(student)
    select_trainable(model, cfg.train)
    index = list(range(min(cfg.batch_size, cache.windows)))

    def step() -> None:
        logits = model(input_ids=batch(cache.tokens, index, cfg.device)).logits
        topk_cross_entropy(logits, batch(cache.topk_ids, index, cfg.device),
                           batch(cache.topk_logits, index, cfg.device)).backward()
        model.zero_grad()

    per_step = _seconds_per_step(step)
    left = 0.9 * (deadline - time.monotonic()) if deadline is not None else 0.0  # 10%: the optimiser, checkpoints
    return max(0, int(left / per_step))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 5) if values else None


def _plot(blocks: list[FitResult], e2e: FitResult | None, png: Path, title: str) -> Path | None:
    """Two panels: each layer's block loss before and after its training; the end-to-end curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not blocks:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    layers = list(range(len(blocks)))
    axes[0].plot(layers, [r.first_loss for r in blocks], "o-", label="first step", linewidth=1)
    axes[0].plot(layers, [r.final_loss for r in blocks], "o-", label="last step", linewidth=1)
    axes[0].set(xlabel="student layer", ylabel="block loss (relative MSE)", yscale="log", title="block-wise stage")
    axes[0].legend()
    if e2e is not None and e2e.log:
        axes[1].plot([r["step"] for r in e2e.log], [r["loss"] for r in e2e.log], linewidth=1)
        axes[1].set(xlabel="step", ylabel="top-k KD loss", title="end-to-end stage")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
