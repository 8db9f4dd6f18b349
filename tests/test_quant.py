"""Quantiser maths: XTC's binary/ternary weights and 8-bit per-token activations."""

import torch
from torch import nn

from xtc.train.quant import (QuantEmbedding, QuantLinear, binarize, dequantize, fake_quant_activations,
                       quantize_activations, quantize_model, symmetric_int, ternarize)


def test_binary_weights_are_exactly_plus_minus_alpha_per_row():
    w = torch.randn(8, 32)
    codes, alpha = binarize(w)
    q = dequantize(codes, alpha)
    expected_alpha = w.abs().mean(1).half().float()  # stored as fp16 on disk
    assert torch.equal(alpha[:, 0], expected_alpha)
    for row in range(8):
        assert set(q[row].unique().tolist()) <= {expected_alpha[row].item(), -expected_alpha[row].item()}
    assert torch.equal(torch.sign(q), torch.where(w >= 0, 1.0, -1.0))


def test_binary_groups_have_their_own_alpha():
    w = torch.cat([torch.full((2, 4), 0.5), torch.full((2, 4), -2.0)], dim=1)
    codes, alpha = binarize(w, group_size=4)
    assert alpha.shape == (2, 2)
    assert torch.equal(dequantize(codes, alpha), w)


def test_ternary_zeroes_small_weights():
    w = torch.tensor([[1.0, -1.0, 0.05, -0.02, 1.2, -0.9, 0.0, 1.1]])
    codes, alpha = ternarize(w)
    assert codes.tolist() == [[1, -1, 0, 0, 1, -1, 0, 1]]
    assert torch.allclose(alpha, torch.tensor([[(1 + 1 + 1.2 + 0.9 + 1.1) / 5]]), atol=1e-3)


def test_straight_through_estimator_passes_gradients_unchanged():
    layer = QuantLinear(nn.Linear(16, 4), weight_bits=1, act_bits=8)
    x = torch.randn(3, 16, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # d(sum(x W^T))/dW = column sums of x for every row: the STE hands exactly this to the latent weights
    expected = fake_quant_activations(x.detach(), 8).sum(0).expand(4, 16)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-5)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_activation_quantisation_error_is_within_half_a_step_per_token():
    x = torch.randn(5, 7, 64) * torch.linspace(0.1, 10, 7)[None, :, None]
    q, scale = quantize_activations(x, 8)
    assert q.abs().max() <= 127
    assert torch.equal(q, q.round())
    err = (q * scale - x).abs()
    assert torch.all(err <= scale / 2 + 1e-6)
    assert scale.shape == (5, 7, 1)  # one scale per token


def test_embedding_int8_per_row():
    w = torch.randn(10, 16)
    codes, scale = symmetric_int(w, 8)
    assert codes.dtype == torch.int8 and codes.abs().max() <= 127
    assert torch.all((dequantize(codes, scale) - w).abs() <= scale / 2 + 1e-6)
    emb = QuantEmbedding(nn.Embedding.from_pretrained(w), bits=8)
    assert torch.allclose(emb(torch.tensor([3])), dequantize(codes, scale)[3:4])


def test_quantize_model_swaps_every_block_linear_and_keeps_norms(tiny_dirs, arch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    quantize_model(model, 1, 8)
    names = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    per_layer = 4 if arch == "gpt2" else 7  # GPT-2: c_attn, c_proj, c_fc, c_proj; Llama: q,k,v,o,gate,up,down
    assert len(names) == per_layer * model.config.num_hidden_layers
    assert all(".h." in n or ".layers." in n for n in names)
    norms = [m for m in model.modules() if "Norm" in type(m).__name__]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    out = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()
