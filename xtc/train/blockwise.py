"""Block-wise distillation from the teacher cache (BRECQ, OmniQuant, EfficientQAT's Block-AP).

Each student layer, with its quantisers in the loop, learns to map the input of the teacher span it
stands for (`reduce.spans`) to that span's output, one layer at a time: the whole model is never
in the graph, the 49k-wide head never runs, so a step costs about 1/40 of an end-to-end step.

A layer's input is either the teacher's hidden state at the span's start (`inputs="teacher"`), or
the student's own: the cached embeddings passed through the already-trained student layers
(`inputs="student"`, the default), so each layer also learns to correct the error of those before
it. The loss is the squared error per token relative to the target's own magnitude, so that the
few tokens with huge activations (attention sinks) do not drown all others. With a warm-up
(`warmup`, a share of the steps) the weights' quantisation error is ramped in linearly from none
(the layer starts as its fp32 self) to all of it, instead of applied whole from the first step.

Each layer starts from round-to-nearest codes (`init="rtn"`) or from GPTQ's, computed on that
layer's own inputs (`init="gptq"`, `gptq.py`); the latent weights then start on the grid, so a
warm-up has no fp32 layer left to start from.

On disk (OUT/checkpoints/blocks): `block{i}.pt` (the fit checkpoint of layer i; finished layers
are restored from it on --resume) and `inputs{i}.npy` (the student's inputs of layer i).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtc.train import arch as archs
from xtc.train.cache import TeacherCache, batch
from xtc.train.fit import FitConfig, FitResult, fit
from xtc.train.gptq import init_layer
from xtc.train.quant import set_blend

INPUTS = ("student", "teacher")


@dataclass
class BlockConfig:
    steps: int  # per layer
    batch_size: int = 4  # windows per step
    lr: float = 1e-4
    lr_quant: float = 1e-3
    inputs: str = "student"
    warmup: float = 0.0  # share of each layer's steps over which the quantisation error is ramped in
    seed: int = 0
    progress: bool = False
    device: str = "cpu"
    init: str = "rtn"  # each layer's starting codes: "rtn" (as quantised) or "gptq" (from its inputs)


def block_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per token, relative to the target token's mean square."""
    err = (out - target).pow(2).mean(-1)
    return (err / target.pow(2).mean(-1).clamp_min(1e-6)).mean()


@torch.no_grad()
def run_layer_over(layer: nn.Module, source: np.ndarray, kwargs: dict, out_path: Path, batch_size: int = 8,
                   device: str = "cpu") -> np.ndarray:
    """`layer` applied to every window of `source` (windows, seq, width), written to `out_path`
    (fp16 .npy, renamed into place when complete)."""
    tmp = out_path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=source.shape)
    layer.eval()
    for lo in range(0, source.shape[0], batch_size):
        x = torch.from_numpy(np.asarray(source[lo:lo + batch_size], np.float32)).to(device)
        out[lo:lo + batch_size] = archs.run_layer(layer, x, kwargs).float().cpu().numpy().astype(np.float16)
    out.flush()
    del out
    tmp.replace(out_path)
    return np.load(out_path, mmap_mode="r")


def train_blocks(student: nn.Module, cache: TeacherCache, spans: list[tuple[int, int]], kwargs: dict,
                 cfg: BlockConfig, directory: Path, deadline: float | None = None) -> list[FitResult]:
    """Train every student layer on its span, in order; stops at `deadline` (a later call with the
    same `directory` continues). Returns one FitResult per layer reached."""
    directory.mkdir(parents=True, exist_ok=True)
    layers = archs.decoder_layers(student)
    results: list[FitResult] = []
    first = _first_to_visit(directory, len(spans), cfg.inputs)
    inputs: np.ndarray = cache.hidden[spans[0][0]] if first == 0 else np.load(directory / f"inputs{first}.npy", mmap_mode="r")
    for i, (start, end) in enumerate(spans):
        if i < first:  # finished, and its successors' inputs are on disk: restore it only
            results.append(fit(layers[i], None, FitConfig(cfg.steps), directory / f"block{i}.pt", name=f"block {i}"))
            continue
        if i > first:
            inputs = cache.hidden[start] if cfg.inputs == "teacher" else _student_inputs(
                layers[i - 1], inputs, kwargs, directory / f"inputs{i}.npy", cfg.device)
        layer, targets = layers[i], cache.hidden[end]
        init_seconds = 0.0
        if cfg.init == "gptq" and not (directory / f"block{i}.pt").exists():  # a checkpoint holds its start
            t = time.monotonic()
            init_layer(layer, inputs, kwargs, cfg.device)
            init_seconds = time.monotonic() - t
        for p in layer.parameters():
            p.requires_grad_(True)

        def loss_fn(generator: torch.Generator, step: int, x_all=inputs, y_all=targets,
                    layer=layer) -> tuple[torch.Tensor, dict]:
            if cfg.warmup:
                set_blend(layer, min(1.0, step / (cfg.warmup * cfg.steps)))
            index = torch.randint(0, cache.windows, (cfg.batch_size,), generator=generator).numpy()
            out = archs.run_layer(layer, batch(x_all, index, cfg.device), kwargs)
            return block_loss(out, batch(y_all, index, cfg.device)), {}

        fit_cfg = FitConfig(cfg.steps, cfg.lr, cfg.lr_quant, seed=cfg.seed + i, progress=cfg.progress)
        result = fit(layer, loss_fn, fit_cfg, directory / f"block{i}.pt", name=f"block {i}", deadline=deadline,
                     init_seconds=init_seconds)
        set_blend(layer, 1.0)
        for p in layer.parameters():
            p.requires_grad_(False)
        results.append(result)
        if not result.finished:
            break
        (directory / f"inputs{i - 1}.npy").unlink(missing_ok=True)  # only the latest inputs are needed
    return results


def _student_inputs(previous: nn.Module, previous_inputs: np.ndarray, kwargs: dict, path: Path,
                    device: str) -> np.ndarray:
    """The student's inputs of a layer: the previous layer's outputs (computed once, kept on disk)."""
    if path.exists():
        return np.load(path, mmap_mode="r")
    return run_layer_over(previous, previous_inputs, kwargs, path, device=device)


def _first_to_visit(directory: Path, n: int, inputs: str) -> int:
    """The first layer whose inputs must be at hand: the latest one with its student inputs on disk
    (every layer before it has finished); 0 when the teacher's inputs are used."""
    if inputs == "teacher":
        return 0
    return max([i for i in range(1, n) if (directory / f"inputs{i}.npy").exists()], default=0)


def summary(results: list[FitResult]) -> list[dict]:
    """One row per layer: steps, seconds (training; init_seconds: setting its start), first and last loss."""
    return [_row(r) for r in results]


def _row(r: FitResult) -> dict:
    return {"block": r.name, "steps": r.steps_done, "finished": r.finished, "seconds": round(r.seconds, 1),
            "init_seconds": round(r.init_seconds, 2), "first_loss": r.first_loss, "final_loss": r.final_loss}
