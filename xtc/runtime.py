"""CPU inference for plain and compressed models: a lean forward pass with a key/value cache
that is reused across calls for the unchanged prefix.

The runtime reads weights out of a transformers model (plain, fake-quantised or loaded from a
packed directory) once, then never touches the transformers modules again: one token of
decoding is a handful of tensor operations per layer, with no per-token framework overhead.
Quantised linears run on integer-valued activations (8-bit per token) exactly as XTC's
fake-quantised student computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xtc import arch as archs
from xtc.quant import QuantEmbedding, QuantHead, QuantLinear, quantize_activations


def default_threads() -> int:
    """Physical cores: hyper-threads slow down dense matrix work."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or 1)
    except Exception:  # pragma: no cover - psutil is a dependency; stay robust anyway
        return max(1, (torch.get_num_threads() or 1))


class Linear:
    """y = x W^T + b; with `act_bits`, x is first quantised per token (XTC's A8)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act_bits: int | None = None):
        self.weight = weight.detach().float().contiguous()
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.act_bits = act_bits

    @classmethod
    def from_module(cls, module: nn.Module) -> "Linear":
        if isinstance(module, QuantLinear):
            with torch.no_grad():
                return cls(module.quantized_weight(), module.bias, module.act_bits)
        linear = archs.as_linear(module)
        return cls(linear.weight, linear.bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits:
            q, scale = quantize_activations(x, self.act_bits)
            y = F.linear(q, self.weight) * scale
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)


def _table(module: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(module, QuantEmbedding):
            return module.quantized_weight().float().contiguous()
        if isinstance(module, QuantHead):
            return module.source.quantized_weight().float().contiguous()
        return module.weight.detach().float().contiguous()


@dataclass
class Norm:
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float
    rms: bool

    @classmethod
    def from_module(cls, module: nn.Module, rms: bool) -> "Norm":
        eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-5)
        bias = getattr(module, "bias", None)
        return cls(module.weight.detach().float(), None if bias is None else bias.detach().float(), eps, rms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.rms:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


@dataclass
class Block:
    norm1: Norm
    norm2: Norm
    qkv: list[Linear]  # [fused qkv] (GPT-2) or [q, k, v] (Llama)
    out: Linear
    mlp: list[Linear]  # [fc, proj] (GPT-2) or [gate, up, down] (Llama)


@dataclass
class KVCache:
    """Pre-allocated keys/values per layer; `length` tokens are valid."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0
    tokens: list[int] = field(default_factory=list)


class Runtime:
    """A model ready for CPU completion: `prefill(ids)` then `step(token)`, both returning
    next-token logits. Consecutive calls share the KV cache for the common prefix."""

    def __init__(self, model: nn.Module, tokenizer, name: str = "model", threads: int | None = None,
                 max_context: int = 2048):
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        config = model.config
        self.arch = archs.arch_of(config)
        self.tokenizer, self.name, self.config = tokenizer, name, config
        self.is_llama = self.arch.name == "llama"
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", max_context)
        self.max_context = min(max_context, limit)
        self.activation = _activation(config)
        self.xtc = getattr(config, "xtc", None)
        self.embed = _table(model.get_submodule(self.arch.embeddings[0]))
        self.pos_embed = _table(model.get_submodule(self.arch.embeddings[1])) if not self.is_llama else None
        self.head = _table(model.get_output_embeddings()) if model.get_output_embeddings() is not None else self.embed
        self.final_norm = Norm.from_module(model.get_submodule(self.arch.final_norm), self.is_llama)
        self.blocks = [self._block(layer) for layer in archs.decoder_layers(model)]
        if self.is_llama:
            self.cos, self.sin = _rope_tables(model, self.max_context, self.head_dim)
        self.cache = self._empty_cache()

    # -- construction -------------------------------------------------------------------------
    def _block(self, layer: nn.Module) -> Block:
        if self.is_llama:
            a, m = layer.self_attn, layer.mlp
            return Block(Norm.from_module(layer.input_layernorm, True), Norm.from_module(layer.post_attention_layernorm, True),
                         [Linear.from_module(a.q_proj), Linear.from_module(a.k_proj), Linear.from_module(a.v_proj)],
                         Linear.from_module(a.o_proj),
                         [Linear.from_module(m.gate_proj), Linear.from_module(m.up_proj), Linear.from_module(m.down_proj)])
        return Block(Norm.from_module(layer.ln_1, False), Norm.from_module(layer.ln_2, False),
                     [Linear.from_module(layer.attn.c_attn)], Linear.from_module(layer.attn.c_proj),
                     [Linear.from_module(layer.mlp.c_fc), Linear.from_module(layer.mlp.c_proj)])

    def _empty_cache(self) -> KVCache:
        shape = (1, self.n_kv_heads, self.max_context, self.head_dim)
        return KVCache([torch.zeros(shape) for _ in self.blocks], [torch.zeros(shape) for _ in self.blocks])

    @property
    def vocab_size(self) -> int:
        return self.head.shape[0]

    # -- the forward pass ---------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Feed `ids` after the cached tokens; logits for the last position (or all positions)."""
        start, n = self.cache.length, len(ids)
        if start + n > self.max_context:
            raise ValueError(f"context of {start + n} tokens exceeds the runtime's {self.max_context}")
        tokens = torch.tensor(ids, dtype=torch.long)
        x = self.embed[tokens]
        if self.pos_embed is not None:
            x = x + self.pos_embed[start:start + n]
        x = x[None]
        mask = None
        if n > 1 and start > 0:  # causal within the new tokens, everything before is visible
            mask = torch.ones(n, start + n, dtype=torch.bool).tril(start)
        for i, block in enumerate(self.blocks):
            x = x + self._attention(i, block, block.norm1(x), start, n, mask)
            x = x + self._mlp(block, block.norm2(x))
        self.cache.length = start + n
        self.cache.tokens.extend(ids)
        x = self.final_norm(x[0] if all_logits else x[0, -1:])
        return F.linear(x, self.head) if all_logits else F.linear(x, self.head)[0]

    def _attention(self, i: int, block: Block, h: torch.Tensor, start: int, n: int, mask) -> torch.Tensor:
        if self.is_llama:
            q, k, v = (lin(h) for lin in block.qkv)
        else:
            q, k, v = block.qkv[0](h).split(self.n_heads * self.head_dim, dim=-1)
        q = q.view(1, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(1, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(1, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.is_llama:
            cos, sin = self.cos[start:start + n], self.sin[start:start + n]
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        keys, values = self.cache.keys[i], self.cache.values[i]
        keys[:, :, start:start + n] = k
        values[:, :, start:start + n] = v
        end = start + n
        attn = F.scaled_dot_product_attention(
            q, keys[:, :, :end], values[:, :, :end], attn_mask=mask,
            is_causal=mask is None and n > 1, enable_gqa=self.n_kv_heads != self.n_heads)
        return block.out(attn.transpose(1, 2).reshape(1, n, self.n_heads * self.head_dim))

    def _mlp(self, block: Block, h: torch.Tensor) -> torch.Tensor:
        if self.is_llama:
            gate, up, down = block.mlp
            return down(self.activation(gate(h)) * up(h))
        fc, proj = block.mlp
        return proj(self.activation(fc(h)))

    # -- prefix reuse ---------------------------------------------------------------------------
    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Next-token logits after `ids`, re-using the cache for the prefix shared with the last
        call (typing one character re-reads a token or two, not the whole prompt)."""
        if not ids:
            raise ValueError("prefill needs at least one token")
        cached = self.cache.tokens
        common = 0
        limit = min(len(cached), len(ids) - 1)  # always feed at least one token to get logits
        while common < limit and cached[common] == ids[common]:
            common += 1
        self.cache.length = common
        del self.cache.tokens[common:]
        return self.forward(ids[common:])

    def step(self, token: int) -> torch.Tensor:
        return self.forward([token])

    def reset(self) -> None:
        self.cache.length = 0
        self.cache.tokens.clear()


def _activation(config):
    from transformers.activations import ACT2FN

    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", "gelu_new")
    return ACT2FN[name]


def _rope_tables(model: nn.Module, length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin per position from the model's own rotary module (so every RoPE variant and scaling
    transformers supports comes for free)."""
    rotary = model.get_submodule("model.rotary_emb")
    positions = torch.arange(length)[None]
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    return cos[0].float(), sin[0].float()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def load_runtime(src: str, threads: int | None = None, max_context: int = 2048) -> Runtime:
    """Load any model SRC (packed dir, HF dir, .gguf, installed name, hub id) for CPU completion."""
    from xtc.sources import load_model

    loaded = load_model(src)
    return Runtime(loaded.model, loaded.tokenizer, loaded.name, threads=threads, max_context=max_context)
