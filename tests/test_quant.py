"""Quantisers: every weight format as codes with a scale and min, trained straight through, and
8-bit per-token activations."""

import pytest
import torch
from torch import nn

from xtc.core.format import Quantizer
from xtc.train.quant import (FORMATS, QuantEmbedding, QuantLinear, fake_quant_activations, init_scale_min,
                             quantize_activations, quantize_model, quantizer)


def linear(w: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    layer.weight.data = w.clone()
    return layer


def test_binary_weights_start_as_plus_minus_alpha_per_row():
    w = torch.randn(8, 32)
    q = QuantLinear(linear(w), quantizer("binary", None), act_bits=8).quantized_weight().detach()
    alpha = w.abs().mean(1).half().float()  # XTC: alpha = mean |w|, stored as fp16
    for row in range(8):
        assert set(q[row].unique().tolist()) <= {alpha[row].item(), -alpha[row].item()}
    assert torch.equal(torch.sign(q), torch.where(w > 0, 1.0, -1.0))


def test_binary_groups_have_their_own_alpha():
    w = torch.cat([torch.full((2, 4), 0.5), torch.full((2, 4), -2.0)], dim=1)
    q = QuantLinear(linear(w), quantizer("binary", 4)).quantized_weight().detach()
    assert torch.equal(q, w)


def test_ternary_zeroes_small_weights():
    w = torch.tensor([[1.0, -1.0, 0.05, -0.02, 1.2, -0.9, 0.0, 1.1]])
    q = QuantLinear(linear(w), quantizer("ternary", None)).quantized_weight().detach()
    alpha = (1 + 1 + 1.2 + 0.9 + 1.1) / 5
    assert torch.allclose(q, torch.tensor([[1, -1, 0, 0, 1, -1, 0, 1]]) * alpha, atol=1e-3)


@pytest.mark.parametrize("fmt", ["int2", "int3", "int4"])
def test_grid_codes_stay_in_range_and_the_clipping_search_never_loses(fmt):
    w = torch.randn(16, 128) * torch.linspace(0.1, 3, 16)[:, None]
    layer = QuantLinear(linear(w), quantizer(fmt, 32))
    codes = layer.codes()
    assert codes.dtype == torch.uint8 and codes.max() < FORMATS[fmt]
    err = (layer.quantized_weight().detach() - w).pow(2).sum()
    # plain min-max (the first candidate of the search) is never better than the chosen clipping
    lo = w.reshape(16, 4, 32).amin(-1)
    hi = w.reshape(16, 4, 32).amax(-1)
    scale = ((hi - lo) / (FORMATS[fmt] - 1)).half().float()
    minmax = torch.clamp(torch.round((w.reshape(16, 4, 32) - lo.half().float()[..., None]) / scale[..., None]),
                         0, FORMATS[fmt] - 1) * scale[..., None] + lo.half().float()[..., None]
    assert err <= (minmax.reshape(16, 128) - w).pow(2).sum() + 1e-6


def test_more_levels_reconstruct_better():
    w = torch.randn(32, 256)
    errors = [(QuantLinear(linear(w), quantizer(f, 64)).quantized_weight().detach() - w).pow(2).mean().item()
              for f in ("binary", "ternary", "int2", "int3", "int4")]
    assert errors == sorted(errors, reverse=True)


def test_scale_and_min_are_stored_as_fp16():
    scale, minimum = init_scale_min(torch.randn(4, 64) * 1e-3, Quantizer(8, 32))
    assert torch.equal(scale, scale.half().float()) and torch.equal(minimum, minimum.half().float())


def test_straight_through_estimator_trains_latent_weights_scales_and_mins():
    layer = QuantLinear(nn.Linear(16, 4), quantizer("int3", 8), act_bits=8)
    x = torch.randn(3, 16, requires_grad=True)
    layer(x).sum().backward()
    # d(sum(x W^T))/dW = column sums of x for every row: the STE hands exactly this to the latent
    # weights inside the quantiser's range, and nothing to those clipped beyond it
    expected = fake_quant_activations(x.detach(), 8).sum(0).expand(4, 16)
    position = (layer.weight.detach().reshape(4, 2, 8) - layer.min.detach()[..., None]) / layer.scale.detach()[..., None]
    inside = ((position >= -0.5) & (position <= 7.5)).reshape(4, 16)
    assert inside.float().mean() > 0.8
    assert torch.allclose(layer.weight.grad, expected * inside, atol=1e-5)
    assert layer.scale.grad is not None and layer.scale.grad.abs().sum() > 0  # LSQ: through the rounding error
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the min moves the range: it learns from the weights its range clips (LSQ+)
    layer.zero_grad()
    layer.scale.data /= 2
    layer(x).sum().backward()
    assert layer.min.grad is not None and layer.min.grad.abs().sum() > 0


def test_activation_quantisation_error_is_within_half_a_step_per_token():
    x = torch.randn(5, 7, 64) * torch.linspace(0.1, 10, 7)[None, :, None]
    q, scale = quantize_activations(x, 8)
    assert q.abs().max() <= 127
    assert torch.equal(q, q.round())
    err = (q * scale - x).abs()
    assert torch.all(err <= scale / 2 + 1e-6)
    assert scale.shape == (5, 7, 1)  # one scale per token


def test_embedding_int8_per_row_is_within_half_a_step():
    w = torch.randn(10, 16)
    emb = QuantEmbedding(nn.Embedding.from_pretrained(w), Quantizer(256))
    table = emb.quantized_weight().detach()
    step = (w.amax(1) - w.amin(1)) / 255
    assert torch.all((table - w).abs() <= step[:, None] / 2 + 1e-3)
    assert torch.equal(emb(torch.tensor([3])), table[3:4])


def test_quantize_model_swaps_every_block_linear_and_keeps_norms(tiny_dirs, arch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    quantize_model(model, quantizer("binary", None), 8)
    names = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    per_layer = 4 if arch == "gpt2" else 7  # GPT-2: c_attn, c_proj, c_fc, c_proj; Llama: q,k,v,o,gate,up,down
    assert len(names) == per_layer * model.config.num_hidden_layers
    assert all(".h." in n or ".layers." in n for n in names)
    norms = [m for m in model.modules() if "Norm" in type(m).__name__]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    out = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()


def test_formats_can_differ_per_matrix(tiny_dirs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    names = [n for n, m in model.named_modules() if n.endswith(("_proj",))]
    formats = {n: quantizer("int4" if n.endswith("down_proj") else "int2", 32) for n in names}
    quantize_model(model, formats, 8)
    levels = {n: m.quantizer.levels for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert {lv for n, lv in levels.items() if n.endswith("down_proj")} == {16}
    assert {lv for n, lv in levels.items() if not n.endswith("down_proj")} == {4}


def test_four_bit_groups_of_32_reproduce_a_q4_1_tensor_exactly():
    """The teacher is a dequantised Q4_1 GGUF: per 32 weights an fp16 scale d and min m, w = d*q + m,
    q in 0..15. int4 in groups of 32 holds that grid exactly (where a group uses both ends of it)."""
    gen = torch.Generator().manual_seed(0)
    d = (torch.rand(8, 4, generator=gen) * 0.01 + 1e-3).half().float()
    m = (-torch.rand(8, 4, generator=gen) * 0.05).half().float()
    q = torch.randint(0, 16, (8, 4, 32), generator=gen).float()
    q[..., 0], q[..., 1] = 0, 15
    w = (d[..., None] * q + m[..., None]).reshape(8, 128)
    layer = QuantLinear(linear(w), quantizer("int4", 32), act_bits=None)
    assert torch.equal(layer.quantized_weight().detach(), w)
