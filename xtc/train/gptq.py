"""Hessian-aware rounding (GPTQ, Frantar et al. 2022) as the start of block-wise training.

Round-to-nearest rounds every weight on its own. GPTQ rounds the columns of a linear one at a time
and spreads each column's rounding error over the columns not yet rounded, weighted by the inverse
of H = 2 X^T X (X: the layer's inputs over the calibration tokens), so that what is minimised is
the output error ||X W^T - X Q^T||, not the weight error. The codes land on the same grid that
`quant.py` defines: the scale and min of each group come from `init_scale_min` (its clipping
search), computed on the group's weights as they stand when its first column is reached (already
corrected for the error of the columns before it).

`init_layer` applies it to every QuantLinear of one decoder layer, with H measured on that layer's
cached inputs (the fp32 layer's inner activations, rounded to int8 as the kernels see them).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xtc.core.format import Quantizer
from xtc.train import arch as archs
from xtc.train.quant import QuantLinear, fake_quant_activations, init_scale_min, set_blend

DAMP = 0.01  # of the mean diagonal of H: keeps the inverse finite where inputs are (nearly) collinear
LAZY = 128  # columns whose updates are applied together (the result does not depend on it)


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, q: Quantizer, damp: float = DAMP
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (rows, cols) uint8, scale and min (rows, groups) of weight `w` (rows, cols) in format
    `q`, for inputs whose second moment is `h` (cols, cols)."""
    rows, cols = w.shape
    group = q.group or cols
    w = w.detach().clone().double()
    h = h.detach().clone().double()
    dead = torch.diag(h) == 0  # inputs never active: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype, device=h.device)
    # the upper Cholesky factor of H^-1: row i holds how column i's error moves the later columns
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(rows, cols, dtype=torch.uint8, device=w.device)
    scales, mins = [], []
    # lazy batches aligned with groups, so a group's scale is found on fully corrected weights
    step = group * max(1, LAZY // group) if q.group else LAZY
    for lo in range(0, cols, step):
        hi = min(lo + step, cols)
        errors = torch.zeros(rows, hi - lo, dtype=w.dtype, device=w.device)
        for i in range(lo, hi):
            if i % group == 0:
                scale, minimum = (t[:, 0].double() for t in init_scale_min(w[:, i:i + group], Quantizer(q.levels, None)))
                scales.append(scale)
                mins.append(minimum)
            code = torch.clamp(torch.round((w[:, i] - minimum) / scale), 0, q.levels - 1)
            codes[:, i] = code.to(torch.uint8)
            err = (w[:, i] - (code * scale + minimum)) / u[i, i]
            w[:, i + 1:hi] -= err[:, None] * u[i, i + 1:hi][None, :]
            errors[:, i - lo] = err
        w[:, hi:] -= errors @ u[lo:hi, hi:]
    return codes, torch.stack(scales, 1).float(), torch.stack(mins, 1).float()


@torch.no_grad()
def hessians(layer: nn.Module, inputs: np.ndarray, kwargs: dict, batch_size: int = 8,
             device: str = "cpu") -> dict[str, torch.Tensor]:
    """H = 2 X^T X / tokens of every QuantLinear in `layer`, X its inputs when the fp32 layer runs
    over `inputs` (windows, seq, width). Linears that read the same tensor (q, k, v) share one H."""
    linears = {name: m for name, m in layer.named_modules() if isinstance(m, QuantLinear)}
    sums = {name: torch.zeros(m.in_features, m.in_features, device=device) for name, m in linears.items()}
    # one batch: id of an input tensor -> (the tensor, kept alive so that its id is not reused; X^T X)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def grab(name: str, module: QuantLinear):
        def hook(_, args):
            x = args[0]
            if id(x) not in seen:
                xq = fake_quant_activations(x, module.act_bits) if module.act_bits else x
                xq = xq.reshape(-1, xq.shape[-1]).float()
                seen[id(x)] = (x, xq.T @ xq)
            sums[name] += seen[id(x)][1]
        return hook

    hooks = [m.register_forward_pre_hook(grab(name, m)) for name, m in linears.items()]
    set_blend(layer, 0.0)  # the fp32 layer: what the quantised one should reproduce
    layer.eval()
    try:
        for lo in range(0, inputs.shape[0], batch_size):
            x = torch.from_numpy(np.asarray(inputs[lo:lo + batch_size], np.float32)).to(device)
            archs.run_layer(layer, x, kwargs)
            seen.clear()
    finally:
        set_blend(layer, 1.0)
        for hook in hooks:
            hook.remove()
    tokens = inputs.shape[0] * inputs.shape[1]
    return {name: 2 * s / tokens for name, s in sums.items()}


@torch.no_grad()
def init_layer(layer: nn.Module, inputs: np.ndarray, kwargs: dict, device: str = "cpu") -> None:
    """Every QuantLinear of `layer` set to its GPTQ codes (latent weight = their dequantised values)."""
    if not any(isinstance(m, QuantLinear) for m in layer.modules()):
        return
    h = hessians(layer, inputs, kwargs, device=device)
    for name, m in layer.named_modules():
        if isinstance(m, QuantLinear):
            codes, scale, minimum = gptq_quantize(m.weight, h[name], m.quantizer)
            m.load_packed(codes, scale, minimum)
