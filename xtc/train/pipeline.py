"""The XTC recipe: which stages each compression method runs, from teacher to packed directory.

- `layer`:  keep every other layer, distil (fp32 student).
- `quant`:  1-bit weights / 8-bit activations at full depth, distil.
- `hybrid`: XTC's two stages: layer reduction + distillation first, then quantisation +
  distillation starting from that student.

`--steps` is per stage; `--time-budget` is for the whole run, split evenly over the stages.
Checkpoints go to OUT/checkpoints and are removed once the packed model is written.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.format import weight_files_mb
from xtc.train import arch as archs
from xtc.train.data import build_corpus
from xtc.train.distill import StageResult, TrainConfig, distill, plot_losses
from xtc.train.load import load_model
from xtc.train.pack import save_packed
from xtc.train.quant import quantize_model
from xtc.train.reduce import reduce_layers, select_layers


@dataclass
class CompressOptions:
    method: str = defaults.METHOD
    keep_layers: str = defaults.KEEP_LAYERS
    weight_bits: int = defaults.WEIGHT_BITS
    act_bits: int | None = defaults.ACT_BITS
    group_size: int | None = None
    embed_bits: int = defaults.EMBED_BITS
    max_tokens: int | None = defaults.MAX_CORPUS_TOKENS
    resume: bool = False
    keep_checkpoints: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)


def fp32_megabytes(model: nn.Module) -> float:
    """Size of the model's unique parameters stored as fp32 (the teacher baseline of the tables)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * 4
    return total / 1e6


def stages(method: str) -> list[str]:
    if method not in defaults.METHODS:
        raise XtcError(f"--method must be one of {', '.join(defaults.METHODS)}, not {method!r}")
    return {"layer": ["layer"], "quant": ["quant"], "hybrid": ["layer", "quant"]}[method]


def build_student(teacher: nn.Module, opts: CompressOptions, stage_names: list[str]) -> tuple[nn.Module, list[int]]:
    """The student's structure after the given stages (weights initialised from the teacher)."""
    n_layers = len(archs.decoder_layers(teacher))
    kept = select_layers(n_layers, opts.keep_layers) if "layer" in stages(opts.method) else list(range(n_layers))
    student = reduce_layers(teacher, kept)
    if "quant" in stage_names:
        quantize_model(student, opts.weight_bits, opts.act_bits, opts.group_size, opts.embed_bits)
    return student, kept


def compress(teacher_src: str, data_dirs: list[Path], out_dir: Path, opts: CompressOptions) -> dict:
    """Run the method's stages and write the packed model; returns the summary `compress` prints."""
    plan = stages(opts.method)
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
    if opts.train.attn_weight:
        teacher.set_attn_implementation("eager")
    corpus = build_corpus(data_dirs, loaded.tokenizer, opts.max_tokens, seed=opts.train.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training").mkdir(exist_ok=True)
    results: list[StageResult] = []
    student, kept = build_student(teacher, opts, plan[:1])
    for i, stage in enumerate(plan):
        if i > 0:  # hybrid's second stage: quantise the layer-reduced student and continue
            quantize_model(student, opts.weight_bits, opts.act_bits, opts.group_size, opts.embed_bits)
        for p in student.parameters():
            p.requires_grad_(True)
        stage_deadline = None
        if deadline is not None:
            stage_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(plan) - i)
        results.append(distill(teacher, student, corpus, kept, opts.train, ckpt_dir / f"{stage}.pt",
                               out_dir / "training" / f"log.{stage}.jsonl", name=stage, deadline=stage_deadline))
    meta = {"method": opts.method, "kept_layers": kept, "teacher": loaded.path,
            "teacher_layers": len(archs.decoder_layers(teacher)),
            "corpus": corpus.describe(), "train": asdict(opts.train),
            "stages": [asdict(r) for r in results]}
    for f in ("config.json", "model.safetensors"):
        (out_dir / f).unlink(missing_ok=True)
    save_packed(student, loaded.tokenizer, out_dir, meta)
    plot_losses([out_dir / "training" / f"log.{s}.jsonl" for s in plan], out_dir / "training" / "loss_curve.png",
                f"XTC {opts.method}: {Path(loaded.path).name}")
    if not opts.keep_checkpoints and all(r.finished for r in results):
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    teacher_mb = fp32_megabytes(teacher)
    packed_mb = weight_files_mb(out_dir)
    summary = {
        "out": str(out_dir), "method": opts.method, "teacher": loaded.path, "kept_layers": kept,
        "teacher_fp32_mb": round(teacher_mb, 3), "packed_mb": round(packed_mb, 3),
        "ratio": round(teacher_mb / packed_mb, 2) if packed_mb else None,
        "stages": [{"stage": r.name, "steps": r.steps_done, "finished": r.finished, "seconds": round(r.seconds, 1),
                    "final_train_loss": None if r.final_train_loss is None else round(r.final_train_loss, 4), **r.val}
                   for r in results],
        "seconds": round(time.monotonic() - started, 1), "corpus": corpus.describe(),
    }
    (out_dir / "training" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
