"""The end-to-end stage from the teacher cache: the assembled student against the teacher's logits.

After the block-wise stage every layer imitates its span alone; this stage trains the whole student
on the teacher's cached top-k next-token logits (cross-entropy against the teacher's distribution
renormalised over its top k, which holds nearly all of its mass), so that errors that only show
at the output are corrected too. What it trains is a knob (`train`):

- `scales`: the quantisers' scales and mins, norms and biases only (EfficientQAT's E2E-QP: few
  parameters, no latent weight changes);
- `all`: every parameter, latent weights and embedding table included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xtc.train.cache import TeacherCache, batch
from xtc.train.fit import FitConfig, FitResult, fit

TRAINS = ("scales", "all")


@dataclass
class E2EConfig:
    steps: int
    batch_size: int = 2  # windows per step
    lr: float = 1e-5  # latent weights (`all`)
    lr_quant: float = 1e-4  # scales, mins, norms, biases
    train: str = "scales"
    temperature: float = 1.0
    seed: int = 0
    progress: bool = False
    device: str = "cpu"


def topk_cross_entropy(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student's distribution against the teacher's, renormalised over the
    teacher's top k tokens (T^2-scaled as the full soft cross-entropy)."""
    t = temperature
    target = F.softmax(topk_logits.float() / t, dim=-1)
    log_probs = F.log_softmax(student_logits.float() / t, dim=-1).gather(-1, topk_ids)
    return -(target * log_probs).sum(-1).mean() * t * t


def select_trainable(model: nn.Module, train: str) -> int:
    """Set requires_grad for the `train` choice; returns how many parameters train."""
    n = 0
    for name, p in model.named_parameters():
        wanted = train == "all" or p.dim() < 2 or name.endswith((".scale", ".min"))
        p.requires_grad_(wanted)
        n += p.numel() if wanted else 0
    return n


def train_end_to_end(student: nn.Module, cache: TeacherCache, cfg: E2EConfig, checkpoint, deadline: float | None = None,
                     log_path=None) -> FitResult:
    """Train the assembled student on the cached logits for `cfg.steps` steps (or until `deadline`)."""
    select_trainable(student, cfg.train)

    def loss_fn(generator: torch.Generator, step: int) -> tuple[torch.Tensor, dict]:
        index = torch.randint(0, cache.windows, (cfg.batch_size,), generator=generator).numpy()
        logits = student(input_ids=batch(cache.tokens, index, cfg.device)).logits
        return topk_cross_entropy(logits, batch(cache.topk_ids, index, cfg.device),
                                  batch(cache.topk_logits, index, cfg.device), cfg.temperature), {}

    fit_cfg = FitConfig(cfg.steps, cfg.lr, cfg.lr_quant, checkpoint_every=20, seed=cfg.seed, progress=cfg.progress)
    result = fit(student, loss_fn, fit_cfg, checkpoint, name="end-to-end", deadline=deadline, log_path=log_path)
    for p in student.parameters():
        p.requires_grad_(False)
    return result


@torch.no_grad()
def perplexity(model: nn.Module, blocks: torch.Tensor, batch_size: int = 4) -> float:
    """Next-token perplexity of `model` on fixed token windows (n, seq)."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for lo in range(0, len(blocks), batch_size):
        ids = blocks[lo:lo + batch_size].to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum").item()
        count += ids[:, 1:].numel()
    return math.exp(min(total / max(1, count), 50.0))
