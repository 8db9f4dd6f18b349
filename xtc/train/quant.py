"""Quantisers and the layers that use them.

One weight quantiser covers every format this project stores (`xtc.core.format.Quantizer`): codes
`q` in `[0, levels)` with a scale and a min per output row or group, `w = scale * q + min`.

- binary (2 levels, XTC's 1 bit): starts as `alpha * sign(W)`, alpha = mean |W| (scale 2 alpha,
  min -alpha);
- ternary (3 levels): starts as ternary weight networks do, `alpha * {-1, 0, +1}`;
- int2 / int3 / int4 (4 / 8 / 16 levels): start from the min-max grid whose clipping gives the
  smallest squared error per group;
- int8 (256 levels): embeddings at 8 bits.

Scale and min are parameters, trained with the latent fp32 weights: the rounding passes gradients
straight through (STE), so scale and min get LSQ-style gradients (EfficientQAT trains them the same
way). `blend` below 1 mixes the latent weight back in (`w + blend * (q(w) - w)`): a gradual
quantisation warm-up ramps it from 0 to 1 while a block trains. The forward pass uses them rounded to fp16, because that is how they are stored: a packed
model reproduces the fake-quantised student exactly. Activations entering the block linears are
quantised per token to symmetric int8 (XTC's A8), the integer format the kernels multiply.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xtc.core.format import MIN, SCALE, Quantizer, pack_codes
from xtc.train import arch as archs

# Weight formats by name: how many levels each stores.
FORMATS = {"binary": 2, "ternary": 3, "int2": 4, "int3": 8, "int4": 16, "int8": 256}
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)


def quantizer(fmt: str, group: int | None) -> Quantizer:
    """The Quantizer of a named format (`binary`, `ternary`, `int2`, `int3`, `int4`, `int8`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}: one of {', '.join(FORMATS)}")
    return Quantizer(FORMATS[fmt], group)


def _grouped(w: torch.Tensor, group: int | None) -> torch.Tensor:
    """(rows, cols) -> (rows, groups, group); one group per row when group is None."""
    rows, cols = w.shape
    g = group or cols
    if cols % g:
        raise ValueError(f"group size {g} does not divide the input width {cols}")
    return w.reshape(rows, cols // g, g)


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(x.dtype)


def init_scale_min(w: torch.Tensor, q: Quantizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting scale and min (rows, groups) for `w` in format `q`, fp16-exact."""
    wg = _grouped(w.detach().float(), q.group)
    if q.levels == 2:  # XTC: alpha * sign(w), alpha = mean |w|
        alpha = _fp16(wg.abs().mean(-1).clamp_min(1e-6))
        return 2 * alpha, -alpha
    if q.levels == 3:  # ternary weight networks: zero below 0.7 mean |w|, alpha = survivors' mean
        keep = wg.abs() > 0.7 * wg.abs().mean(-1, keepdim=True)
        alpha = _fp16(((wg.abs() * keep).sum(-1) / keep.sum(-1).clamp_min(1)).clamp_min(1e-6))
        return alpha, -alpha
    lo, hi = wg.amin(-1), wg.amax(-1)
    best = None
    for ratio in CLIP_RATIOS:
        scale = _fp16(((hi - lo) * ratio / (q.levels - 1)).clamp_min(1e-6))
        minimum = _fp16(lo * ratio)
        err = (dequantize(codes_of(wg, scale, minimum, q.levels), scale, minimum) - wg).pow(2).sum(-1)
        if best is None:
            best = (scale, minimum, err)
        else:
            better = err < best[2]
            best = (torch.where(better, scale, best[0]), torch.where(better, minimum, best[1]),
                    torch.minimum(err, best[2]))
    return best[0], best[1]


def codes_of(wg: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, levels: int) -> torch.Tensor:
    """Codes (rows, groups, group) of grouped weights for (rows, groups) scales and mins."""
    return torch.clamp(torch.round((wg - minimum[..., None]) / scale[..., None]), 0, levels - 1)


def dequantize(q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """Grouped codes back to weights: scale * q + min (same shape as q)."""
    return q * scale[..., None] + minimum[..., None]


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _fp16_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (_fp16(x) - x).detach()


class _AffineWeight(nn.Module):
    """Latent fp32 weight + trainable scale and min: the quantiser shared by linears and tables."""

    packed_params = ("weight", "scale", "min")  # stored as codes + fp16 scales and mins
    blend = 1.0  # share of the quantisation error in the forward pass (a warm-up lowers it)

    def _init_quant(self, weight: torch.Tensor, q: Quantizer) -> None:
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.quantizer = q
        scale, minimum = init_scale_min(self.weight, q)
        self.scale = nn.Parameter(scale)
        self.min = nn.Parameter(minimum)

    def stored_scale_min(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and min as stored (fp16 values), with straight-through gradients."""
        return _fp16_ste(self.scale.clamp_min(1e-6)), _fp16_ste(self.min)

    def quantized_weight(self) -> torch.Tensor:
        scale, minimum = self.stored_scale_min()
        wg = _grouped(self.weight, self.quantizer.group)
        q = torch.clamp(_round_ste((wg - minimum[..., None]) / scale[..., None]), 0, self.quantizer.levels - 1)
        quantized = dequantize(q, scale, minimum).reshape(self.weight.shape)
        return quantized if self.blend >= 1 else self.weight + self.blend * (quantized - self.weight)

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """uint8 codes (rows, cols) of the current weight."""
        scale, minimum = self.stored_scale_min()
        wg = _grouped(self.weight.float(), self.quantizer.group)
        return codes_of(wg, scale, minimum, self.quantizer.levels).reshape(self.weight.shape).to(torch.uint8)

    # The packed format (xtc.core.format, v2): codes at their real width, fp16 scales and mins.
    @torch.no_grad()
    def packed_tensors(self) -> dict[str, np.ndarray]:
        scale, minimum = self.stored_scale_min()
        return {**pack_codes(self.codes().cpu().numpy(), self.quantizer.bits),
                SCALE: scale.to(torch.float16).cpu().numpy(), MIN: minimum.to(torch.float16).cpu().numpy()}

    @torch.no_grad()
    def load_packed(self, q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> None:
        """Set the latent weight to the stored one (codes, fp16 scale and min)."""
        self.scale.data = scale.float()
        self.min.data = minimum.float()
        wg = q.float().reshape(self.weight.shape[0], scale.shape[-1], -1)
        self.weight.data = dequantize(wg, self.scale.data, self.min.data).reshape(self.weight.shape)


def set_blend(module: nn.Module, blend: float) -> None:
    """The share of the quantisation error every quantised weight in `module` shows (1: all of it)."""
    for m in module.modules():
        if isinstance(m, _AffineWeight):
            m.blend = blend


def quantize_activations(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (same dtype as x) and one scale per token (last dim reduced)."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(-1, keepdim=True).clamp_min(1e-8) / qmax
    return torch.round(x / scale).clamp(-qmax, qmax), scale


def fake_quant_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """x rounded to `bits`-bit codes per token; gradients pass straight through."""
    q, scale = quantize_activations(x, bits)
    return x + (q * scale - x).detach()


class QuantLinear(_AffineWeight):
    """A linear layer with quantised weights and (optionally) 8-bit input activations. It wraps the
    original layer's weights as latent fp32 weights; the forward pass sees only their quantised
    values."""

    def __init__(self, linear: nn.Linear, q: Quantizer, act_bits: int | None = 8):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_quant(linear.weight, q)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.act_bits = act_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits:
            x = fake_quant_activations(x, self.act_bits)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.quantized_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, levels={self.quantizer.levels}, "
                f"group={self.quantizer.group or 'row'}, act_bits={self.act_bits}")


class QuantEmbedding(_AffineWeight):
    """An embedding table stored as integer codes with a scale and min per row or group."""

    def __init__(self, embedding: nn.Embedding, q: Quantizer):
        super().__init__()
        self._init_quant(embedding.weight, q)
        self.num_embeddings, self.embedding_dim = self.weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.quantized_weight())


class QuantHead(nn.Module):
    """The output projection, tied to a QuantEmbedding (as GPT-2 and SmolLM2 do) or with its own table."""

    def __init__(self, table: QuantEmbedding, tied: bool):
        super().__init__()
        self.tied = tied
        if tied:
            object.__setattr__(self, "_table", table)  # not a submodule: no duplicate parameters
        else:
            self.table = table  # stored as `lm_head.table` (xtc.core.format.HEAD_TABLE)

    @property
    def source(self) -> QuantEmbedding:
        return self._table if self.tied else self.table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.source.quantized_weight().to(x.dtype))


def quantize_linears(module: nn.Module, weights: Quantizer | dict[str, Quantizer], act_bits: int | None,
                     names: list[str]) -> None:
    """Swap the named linear layers of `module` for QuantLinears, in place. `weights`: one format
    for all, or one per name (bit widths allocated per layer or matrix)."""
    for name in names:
        q = weights[name] if isinstance(weights, dict) else weights
        linear = archs.as_linear(module.get_submodule(name))
        archs.replace_module(module, name, QuantLinear(linear, q, act_bits))


def quantize_embeddings(model: nn.Module, q: Quantizer) -> None:
    """The embedding tables (and the head, tied or not) as QuantEmbeddings, in place."""
    arch = archs.arch_of(model.config)
    head = model.get_output_embeddings()
    token_table = model.get_submodule(arch.embeddings[0])
    tied = head is not None and head.weight is token_table.weight
    for name in arch.embeddings:
        archs.replace_module(model, name, QuantEmbedding(model.get_submodule(name), q))
    if head is not None:
        source = model.get_submodule(arch.embeddings[0]) if tied else QuantEmbedding(
            nn.Embedding.from_pretrained(head.weight.detach()), q)
        archs.replace_module(model, arch.head, QuantHead(source, tied))


def quantize_model(model: nn.Module, weights: Quantizer | dict[str, Quantizer], act_bits: int | None = 8,
                   embed: Quantizer | None = Quantizer(256)) -> nn.Module:
    """Every linear layer inside the decoder blocks as a QuantLinear (`weights`: one Quantizer, or
    one per dotted module name), the embeddings and head as integer tables (`embed`; None keeps them
    fp32), in place. Norms and biases stay in floating point."""
    quantize_linears(model, weights, act_bits, archs.block_linear_names(model))
    if embed is not None:
        quantize_embeddings(model, embed)
    return model
