"""The training loop of the cached stages (block-wise and end-to-end from the teacher cache).

`fit` trains whatever parameters of `module` require gradients on a loss the caller computes from
a random generator (which batch to draw is the caller's business): AdamW with two learning rates
(latent weights, and everything else: quantiser scales and mins, norms, biases), linear warm-up
then cosine decay, gradient clipping, a wall-clock deadline, atomic checkpoints that continue after
a kill (model, optimiser, schedule, step, log and the generator's state), a tqdm bar and a log.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn


@dataclass
class FitConfig:
    steps: int
    lr: float = 1e-4  # latent weights
    lr_quant: float = 1e-3  # quantiser scales and mins, norms, biases
    warmup_fraction: float = 0.05
    clip_norm: float = 1.0
    checkpoint_every: int = 50
    seed: int = 0
    progress: bool = False


@dataclass
class FitResult:
    name: str
    steps_done: int
    finished: bool  # False: the deadline stopped it (a checkpoint holds where)
    seconds: float
    first_loss: float | None = None
    final_loss: float | None = None
    log: list[dict] = field(default_factory=list)
    init_seconds: float = 0.0  # spent before the first step setting the start (e.g. GPTQ codes)


def schedule(steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero at `steps`."""
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return factor


def param_groups(module: nn.Module, cfg: FitConfig) -> list[dict]:
    """Latent weight matrices at `lr`; scales, mins, norms and biases at `lr_quant`."""
    weights, others = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (weights if p.dim() >= 2 and name.endswith("weight") else others).append(p)
    return [g for g in ({"params": weights, "lr": cfg.lr}, {"params": others, "lr": cfg.lr_quant}) if g["params"]]


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good checkpoint


def fit(module: nn.Module, loss_fn: Callable[[torch.Generator, int], tuple[torch.Tensor, dict]] | None,
        cfg: FitConfig, checkpoint: Path, name: str = "fit", deadline: float | None = None,
        log_path: Path | None = None, init_seconds: float = 0.0) -> FitResult:
    """Train `module` for `cfg.steps` steps of `loss_fn(generator, step)`, or until `deadline`
    (time.monotonic()). Continues from `checkpoint` if it exists; a finished one only restores the
    module's trained state (then `loss_fn` may be None). `init_seconds` (what setting the module's
    start took) is kept in the checkpoint and returned, also by a restore."""
    from tqdm.auto import tqdm

    started = time.monotonic()
    groups = param_groups(module, cfg)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(cfg.steps, cfg.warmup_fraction))
    generator = torch.Generator().manual_seed(cfg.seed)
    step, log = 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        module.load_state_dict(state["module"])
        step, log = state["step"], state["log"]
        init_seconds = state.get("init_seconds", init_seconds)
        if state["done"]:
            return FitResult(name, step, True, 0.0, *_ends(log), log, init_seconds)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])

    def save(done: bool) -> None:
        state = {"module": module.state_dict(), "step": step, "log": log, "done": done, "init_seconds": init_seconds}
        if not done:  # what continuing needs; a finished stage keeps only its result
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         generator=generator.get_state())
        _save(checkpoint, state)

    bar = tqdm(total=cfg.steps, initial=step, desc=name, disable=not cfg.progress, dynamic_ncols=True, leave=False)
    module.eval()  # no dropout: the cached targets were computed without it, and a step must be deterministic
    while step < cfg.steps:
        if deadline is not None and time.monotonic() >= deadline:
            break
        loss, parts = loss_fn(generator, step)
        loss.backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log.append({"stage": name, "step": step, "loss": float(loss.detach()), **parts,
                    "elapsed_s": round(time.monotonic() - started, 2)})
        bar.update(1)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save(done=False)
    bar.close()
    finished = step >= cfg.steps
    save(done=finished)
    if log_path is not None:
        with open(log_path, "w") as f:  # the checkpoint holds the whole log, so rewrite it
            for row in log:
                f.write(json.dumps(row) + "\n")
    return FitResult(name, step, finished, time.monotonic() - started, *_ends(log), log, init_seconds)


def _ends(log: list[dict]) -> tuple[float | None, float | None]:
    """First and last logged loss (None before any step)."""
    return (log[0]["loss"], log[-1]["loss"]) if log else (None, None)
