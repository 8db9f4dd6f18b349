"""XTC's extreme quantisers and the layers that use them.

Weights: binary `alpha * sign(W)` (1 bit) or ternary `alpha * {-1, 0, +1}` (2 bits), with alpha per
output row or per group of `group_size` inputs. Activations: symmetric 8-bit with a dynamic scale
per token. All quantisers pass gradients straight through (STE), so training keeps fp32 latent
weights. Scales are rounded to fp16 because that is how they are stored on disk: the packed model
then reproduces the fake-quantised student bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xtc.core.defaults import WEIGHT_BITS_CHOICES
from xtc.core.format import PACKED, SCALE, pack_ints
from xtc.train import arch as archs


def _grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(out, in) -> (out, groups, group_size); one group per row when group_size is None."""
    out_features, in_features = w.shape
    g = group_size or in_features
    if in_features % g:
        raise ValueError(f"group size {g} does not divide the input width {in_features}")
    return w.reshape(out_features, in_features // g, g)


def _fp16_exact(scale: torch.Tensor) -> torch.Tensor:
    return scale.to(torch.float16).to(scale.dtype).clamp_min(1e-8)


def binarize(w: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes in {-1, +1} (int8, zero maps to +1) and alpha = mean |w| per row or group."""
    wg = _grouped(w, group_size)
    alpha = _fp16_exact(wg.abs().mean(-1))
    codes = torch.where(wg >= 0, 1, -1).to(torch.int8)
    return codes.reshape(w.shape), alpha


def ternarize(w: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary weight networks: zero below 0.7 * mean |w|, alpha = mean of the survivors' |w|."""
    wg = _grouped(w, group_size)
    delta = 0.7 * wg.abs().mean(-1, keepdim=True)
    keep = wg.abs() > delta
    alpha = _fp16_exact((wg.abs() * keep).sum(-1) / keep.sum(-1).clamp_min(1))
    codes = (torch.sign(wg) * keep).to(torch.int8)
    return codes.reshape(w.shape), alpha


def dequantize(codes: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """codes (out, in) integer, scale (out, groups) -> (out, in) real weights."""
    out_features, in_features = codes.shape
    groups = scale.shape[-1]
    w = codes.to(dtype).reshape(out_features, groups, in_features // groups) * scale.to(dtype)[..., None]
    return w.reshape(out_features, in_features)


def quantize_weight(w: torch.Tensor, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if bits == 1:
        return binarize(w, group_size)
    if bits == 2:
        return ternarize(w, group_size)
    raise ValueError(f"weight bits must be one of {WEIGHT_BITS_CHOICES}, not {bits}")


def symmetric_int(w: torch.Tensor, bits: int, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer codes and a scale per row or group (embeddings, heads)."""
    qmax = 2 ** (bits - 1) - 1
    wg = _grouped(w, group_size)
    scale = _fp16_exact(wg.abs().amax(-1) / qmax)
    codes = torch.round(wg / scale[..., None]).clamp(-qmax, qmax).to(torch.int8)
    return codes.reshape(w.shape), scale


class _WeightSTE(torch.autograd.Function):
    """Forward: the quantised weight. Backward: the gradient unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, w, bits, group_size):
        codes, scale = quantize_weight(w, bits, group_size)
        return dequantize(codes, scale, w.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class _SymSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, bits, group_size):
        codes, scale = symmetric_int(w, bits, group_size)
        return dequantize(codes, scale, w.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def quantize_activations(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (same dtype as x) and one scale per token (last dim reduced)."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(-1, keepdim=True).clamp_min(1e-8) / qmax
    return torch.round(x / scale).clamp(-qmax, qmax), scale


class _ActSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits):
        q, scale = quantize_activations(x, bits)
        return q * scale

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def fake_quant_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return _ActSTE.apply(x, bits)


class QuantLinear(nn.Module):
    """A linear layer with 1- or 2-bit weights and (optionally) 8-bit input activations.

    Wraps the original layer's fp32 weights as latent weights; the forward pass sees only their
    quantised values.
    """

    def __init__(self, linear: nn.Linear, weight_bits: int = 1, act_bits: int | None = 8,
                 group_size: int | None = None):
        super().__init__()
        if weight_bits not in WEIGHT_BITS_CHOICES:
            raise ValueError(f"weight bits must be one of {WEIGHT_BITS_CHOICES}, not {weight_bits}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.weight_bits, self.act_bits, self.group_size = weight_bits, act_bits, group_size

    def quantized_weight(self) -> torch.Tensor:
        return _WeightSTE.apply(self.weight, self.weight_bits, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits:
            x = fake_quant_activations(x, self.act_bits)
        return F.linear(x, self.quantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, W{self.weight_bits}A{self.act_bits or 32}, "
                f"group={self.group_size or 'row'}")

    # The packed format (xtc.core.format): bit-packed codes and fp16 scales instead of the weight.
    def packed_tensors(self) -> dict[str, np.ndarray]:
        codes, scale = quantize_weight(self.weight.detach().float(), self.weight_bits, self.group_size)
        return {PACKED: pack_ints(codes.cpu().numpy(), self.weight_bits), SCALE: scale.to(torch.float16).cpu().numpy()}

    def packed_settings(self) -> dict:
        return {"weight_bits": self.weight_bits, "act_bits": self.act_bits, "group_size": self.group_size}


class QuantEmbedding(nn.Module):
    """An embedding table stored as `bits`-bit integers with a scale per row (or group)."""

    def __init__(self, embedding: nn.Embedding, bits: int = 8, group_size: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(embedding.weight.detach().clone())
        self.bits, self.group_size = bits, group_size
        self.num_embeddings, self.embedding_dim = self.weight.shape

    def quantized_weight(self) -> torch.Tensor:
        return _SymSTE.apply(self.weight, self.bits, self.group_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.quantized_weight())

    # The packed format (xtc.core.format): integer codes and fp16 scales instead of the table.
    def packed_tensors(self) -> dict[str, np.ndarray]:
        codes, scale = symmetric_int(self.weight.detach().float(), self.bits, self.group_size)
        return {PACKED: pack_ints(codes.cpu().numpy(), self.bits), SCALE: scale.to(torch.float16).cpu().numpy()}

    def packed_settings(self) -> dict:
        return {"embed_bits": self.bits}


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


def default_embed_group(bits: int) -> int | None:
    """8-bit embeddings keep a scale per row; lower widths need finer groups to stay accurate."""
    return None if bits >= 8 else 64


def quantize_model(model: nn.Module, weight_bits: int = 1, act_bits: int | None = 8,
                   group_size: int | None = None, embed_bits: int = 8) -> nn.Module:
    """Swap every linear layer inside the decoder blocks for a QuantLinear and the embeddings and
    head for their integer versions, in place. Norms and biases stay in floating point."""
    for name in archs.block_linear_names(model):
        linear = archs.as_linear(model.get_submodule(name))
        archs.replace_module(model, name, QuantLinear(linear, weight_bits, act_bits, group_size))
    arch = archs.arch_of(model.config)
    embed_group = default_embed_group(embed_bits)
    head = model.get_output_embeddings()
    token_table = model.get_submodule(arch.embeddings[0])
    tied = head is not None and head.weight is token_table.weight
    for name in arch.embeddings:
        archs.replace_module(model, name, QuantEmbedding(model.get_submodule(name), embed_bits, embed_group))
    if head is not None:
        source = model.get_submodule(arch.embeddings[0]) if tied else QuantEmbedding(
            nn.Embedding.from_pretrained(head.weight.detach()), embed_bits, embed_group)
        archs.replace_module(model, arch.head, QuantHead(source, tied))
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QuantLinear) for m in model.modules())
