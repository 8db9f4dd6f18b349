"""Knowledge distillation: XTC's losses and one readable training loop.

loss = T^2 * soft cross-entropy(teacher logits / T, student logits / T)
     + hidden_weight * normalised MSE between hidden states at matching layers
     + attn_weight * MSE between attention maps at matching layers (when the model returns them)

The loop: AdamW, linear warm-up then linear decay, gradient clipping, bf16 autocast on a GPU
(fp32 on the CPU), a wall-clock budget, checkpoints that `--resume` continues from, a tqdm
progress bar and a JSON-lines loss log. Multi-GPU runs go through `accelerate launch`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xtc.core import defaults
from xtc.train.data import Corpus, eval_blocks, sample_batch


@dataclass
class TrainConfig:
    steps: int = defaults.STEPS
    time_budget_s: float | None = None
    seq_len: int = defaults.SEQ_LEN
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LR
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    temperature: float = defaults.TEMPERATURE
    hidden_weight: float = defaults.HIDDEN_WEIGHT
    attn_weight: float = defaults.ATTN_WEIGHT
    eval_every: int = defaults.EVAL_EVERY
    checkpoint_every: int = defaults.CHECKPOINT_EVERY
    device: str = "auto"
    seed: int = defaults.SEED
    progress: bool = True


@dataclass
class StageResult:
    name: str
    steps_done: int
    finished: bool  # False when the time budget stopped it early
    seconds: float
    final_train_loss: float | None
    val: dict = field(default_factory=dict)


# -- losses -------------------------------------------------------------------------------------

def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """XTC's logit loss: cross-entropy against the teacher's softened distribution."""
    t = temperature
    target = F.softmax(teacher_logits.float() / t, dim=-1)
    return -(target * F.log_softmax(student_logits.float() / t, dim=-1)).sum(-1).mean() * t * t


def hidden_mse(student_hidden, teacher_hidden, layer_map: list[tuple[int, int]]) -> torch.Tensor:
    """MSE between matching hidden states, each normalised by the teacher's mean square so that
    models with large residual streams do not drown the logit loss."""
    losses = []
    for s, t in layer_map:
        target = teacher_hidden[t].float()
        losses.append(F.mse_loss(student_hidden[s].float(), target) / target.pow(2).mean().clamp_min(1e-6))
    return torch.stack(losses).mean()


def attention_mse(student_attn, teacher_attn, layer_map: list[tuple[int, int]]) -> torch.Tensor:
    return torch.stack([F.mse_loss(student_attn[s].float(), teacher_attn[t].float()) for s, t in layer_map]).mean()


def layer_map(kept: list[int]) -> list[tuple[int, int]]:
    """(student hidden index, teacher hidden index): embeddings, then each kept layer's output."""
    return [(0, 0)] + [(s + 1, t + 1) for s, t in enumerate(kept)]


def distillation_loss(student_out, teacher_out, kept: list[int], cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    kd = soft_cross_entropy(student_out.logits, teacher_out.logits, cfg.temperature)
    parts = {"kd": kd}
    if cfg.hidden_weight and student_out.hidden_states is not None:
        parts["hidden"] = hidden_mse(student_out.hidden_states, teacher_out.hidden_states, layer_map(kept))
    if cfg.attn_weight and getattr(student_out, "attentions", None):
        parts["attn"] = attention_mse(student_out.attentions, teacher_out.attentions, [(s, t) for s, t in enumerate(kept)])
    total = kd + cfg.hidden_weight * parts.get("hidden", 0.0) + cfg.attn_weight * parts.get("attn", 0.0)
    return total, {k: float(v.detach()) for k, v in parts.items()}


# -- schedule, checkpoints ---------------------------------------------------------------------

def lr_lambda(steps: int, warmup_fraction: float):
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return factor


def save_checkpoint(path: Path, student: nn.Module, optimizer, scheduler, step: int, log: list[dict], done: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"student": student.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "log": log, "done": done, "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good checkpoint


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from xtc.core.errors import XtcError

        raise XtcError("--device cuda: no CUDA GPU is available here")
    return device


# -- the loop ----------------------------------------------------------------------------------

def distill(teacher: nn.Module, student: nn.Module, corpus: Corpus, kept: list[int], cfg: TrainConfig,
            checkpoint: Path, log_path: Path, name: str = "distill", deadline: float | None = None) -> StageResult:
    """Train `student` to imitate `teacher` for `cfg.steps` steps (or until `deadline`,
    a time.monotonic() value). Resumes from `checkpoint` if it exists."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if device == "cuda" else "no")
    started = time.monotonic()
    optimizer = torch.optim.AdamW(_param_groups(student, cfg.lr), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.steps, cfg.warmup_fraction))
    state = load_checkpoint(checkpoint)
    step, log = 0, []
    if state is not None:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, log = state["step"], state["log"]
        if state.get("done"):
            return StageResult(name, step, True, 0.0, log[-1]["loss"] if log else None,
                               evaluate(teacher, student, corpus, kept, cfg, accelerator.device))
    teacher = teacher.to(accelerator.device).eval()
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + step * 7 + accelerator.process_index)
    if state is not None and state.get("rng") is not None:  # dropout goes on as if never stopped
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    want_attn = cfg.attn_weight > 0
    bar = tqdm(total=cfg.steps, initial=step, desc=name, disable=not cfg.progress or not accelerator.is_main_process,
               dynamic_ncols=True)
    finished = True
    student.train()
    while step < cfg.steps:
        if deadline is not None and _stop_for_time(accelerator, deadline):
            finished = False
            break
        batch = sample_batch(corpus.train, cfg.batch_size, cfg.seq_len, generator).to(accelerator.device)
        with torch.no_grad(), accelerator.autocast():
            teacher_out = teacher(input_ids=batch, output_hidden_states=True, output_attentions=want_attn)
        with accelerator.autocast():
            student_out = student(input_ids=batch, output_hidden_states=True, output_attentions=want_attn)
            loss, parts = distillation_loss(student_out, teacher_out, kept, cfg)
        accelerator.backward(loss)
        if cfg.clip_norm:
            accelerator.clip_grad_norm_(student.parameters(), cfg.clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log.append({"stage": name, "step": step, "loss": float(loss.detach()), **parts, "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": round(time.monotonic() - started, 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            log[-1]["val"] = evaluate(teacher, accelerator.unwrap_model(student), corpus, kept, cfg, accelerator.device)
            student.train()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and accelerator.is_main_process:
            save_checkpoint(checkpoint, accelerator.unwrap_model(student), optimizer, scheduler, step, log, done=False)
    bar.close()
    student = accelerator.unwrap_model(student)
    val = evaluate(teacher, student, corpus, kept, cfg, accelerator.device)
    if accelerator.is_main_process:
        save_checkpoint(checkpoint, student, optimizer, scheduler, step, log, done=finished)
        with open(log_path, "w") as f:  # the checkpoint holds the whole log, so rewrite it
            for row in log:
                f.write(json.dumps(row) + "\n")
    student.to("cpu")
    teacher.to("cpu")
    return StageResult(name, step, finished, time.monotonic() - started, log[-1]["loss"] if log else None, val)


def _param_groups(student: nn.Module, lr: float) -> list[dict]:
    """Quantiser scales and mins move a tenth as fast as the weights: they are of the weights'
    magnitude, and XTC's binary scale (mean |w| of a row) changes only as fast as its weights do."""
    quant = [p for n, p in student.named_parameters() if n.endswith((".scale", ".min"))]
    ids = {id(p) for p in quant}
    rest = [p for p in student.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}] + ([{"params": quant, "lr": lr / 10}] if quant else [])


def _stop_for_time(accelerator, deadline: float) -> bool:
    """All processes stop together: any one past the deadline stops everyone."""
    flag = torch.tensor([1.0 if time.monotonic() >= deadline else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0) if accelerator.num_processes > 1 else bool(flag.item())


@torch.no_grad()
def evaluate(teacher: nn.Module, student: nn.Module, corpus: Corpus, kept: list[int], cfg: TrainConfig, device) -> dict:
    """Validation on held-out files: the student's next-token loss and its distillation loss."""
    student.eval()
    teacher = teacher.to(device)
    student = student.to(device)
    blocks = eval_blocks(corpus.val, cfg.seq_len).to(device)
    lm, kd, n = 0.0, 0.0, 0
    for i in range(0, len(blocks), cfg.batch_size):
        batch = blocks[i:i + cfg.batch_size]
        s = student(input_ids=batch).logits.float()
        t = teacher(input_ids=batch).logits.float()
        lm += F.cross_entropy(s[:, :-1].reshape(-1, s.shape[-1]), batch[:, 1:].reshape(-1)).item() * len(batch)
        kd += soft_cross_entropy(s, t, cfg.temperature).item() * len(batch)
        n += len(batch)
    lm, kd = lm / n, kd / n
    return {"val_lm_loss": round(lm, 4), "val_perplexity": round(math.exp(min(lm, 50)), 2), "val_kd_loss": round(kd, 4)}


def read_logs(log_paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in log_paths if p.exists() for line in p.read_text().splitlines() if line.strip()]


def plot_losses(log_paths: list[Path], out_png: Path, title: str) -> Path | None:
    """The poster's figure: training loss per step, one line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_logs(log_paths)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    for stage in dict.fromkeys(r["stage"] for r in rows):
        stage_rows = [r for r in rows if r["stage"] == stage]
        ax.plot([offset + r["step"] for r in stage_rows], [r["loss"] for r in stage_rows], label=stage, linewidth=1)
        offset += stage_rows[-1]["step"]
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
