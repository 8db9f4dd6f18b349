"""CPU inference for plain and compressed models: a lean forward pass with a key/value cache
that is reused across calls for the unchanged prefix.

The runtime holds its weights as numpy arrays and runs on small compiled kernels (`xtc.infer.kernels`:
AVX2 C++ built once with g++, loaded with ctypes), falling back to numpy where they are missing.
It never imports torch or transformers for a packed or Hugging Face model directory: weights
come straight from the safetensors file, still bit-packed, and the tokenizer from
`tokenizer.json`. That keeps the process small (torch alone costs ~230 MB of RSS) and starts fast.
`Runtime(model, tokenizer)` also accepts a transformers model (plain or fake-quantised), reading
its weights once; other sources (`.gguf`, hub ids) are loaded through transformers that way.

Binary linears (1-bit weights, 8-bit activations, XTC's W1A8) run on the bit-packed weights:
activations are quantised per token to int8 exactly as `xtc.train.quant` does, the +-1 products are
summed exactly in integers, and the per-row (or group) scales are applied in fp32, so the result
equals the fake-quantised student's up to float rounding. Every other linear (plain models,
ternary or unquantised-activation students) is an fp32 matmul on dequantised weights.

A block whose linears are all binary runs as ten kernel calls on preallocated buffers (norm and
quantisation fused, q/k/v and gate/up fused, residual adds in the matmul epilogue); the last
layer of a prefill computes attention and MLP for the last position only (the only one the head
reads). The output head multiplies the int8 (or fp32) embedding table directly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xtc.infer import kernels as _kernels
from xtc.core.errors import XtcError

SUPPORTED = ("gpt2", "llama")


def default_threads() -> int:
    """Physical cores: hyper-threads slow down dense matrix work."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or 1)
    except Exception:  # pragma: no cover - psutil is a dependency; stay robust anyway
        return max(1, os.cpu_count() or 1)


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


# -- linear layers ------------------------------------------------------------------------------
def quantize_rows(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """`xtc.train.quant.quantize_activations` in numpy: integer codes (fp32) and a scale per row."""
    qmax = np.float32(2 ** (bits - 1) - 1)
    scale = np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-8)) / qmax
    return np.clip(np.rint(x / scale), -qmax, qmax), scale


def dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """codes (out, in) and scale (out, groups) -> fp32 weights, as `xtc.train.quant.dequantize`."""
    rows, cols = codes.shape
    groups = scale.shape[-1]
    w = codes.astype(np.float32).reshape(rows, groups, cols // groups) * scale.astype(np.float32)[..., None]
    return w.reshape(rows, cols)


class DenseLinear:
    """y = x W^T + b in fp32; with `act_bits`, x is first quantised per token (XTC's A8).

    With the kernels, the weights are kept only as panels of 16 output columns (`panels`), the
    layout of the fp32 matrix kernel; `weight` (row-major) is rebuilt on demand for numpy."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, act_bits: int | None = None):
        self._weight: np.ndarray | None = _f32(weight)
        self.panels: np.ndarray | None = None
        self.bias = None if bias is None else _f32(bias)
        self.act_bits = act_bits
        self.out_features, self.in_features = self._weight.shape

    @property
    def weight(self) -> np.ndarray:
        if self._weight is None:
            k, n = self.in_features, self.out_features
            self._weight = np.ascontiguousarray(self.panels.transpose(0, 2, 1).reshape(-1, k)[:n])
        return self._weight

    def prepare(self) -> None:
        """Switch to the kernel layout (once; frees the row-major copy)."""
        if self.panels is None:
            n, k = self.weight.shape
            padded = np.zeros((-(-n // 16) * 16, k), np.float32)
            padded[:n] = self.weight
            self.panels = np.ascontiguousarray(padded.reshape(-1, 16, k).transpose(0, 2, 1))
            self._weight = None

    def __call__(self, x: np.ndarray, rt: "Runtime | None" = None) -> np.ndarray:
        if self.act_bits:
            x, scale = quantize_rows(x, self.act_bits)
        if self.panels is not None and rt is not None and rt.lib is not None:
            x = np.ascontiguousarray(x, dtype=np.float32)
            y = np.empty((x.shape[0], self.out_features), np.float32)
            bias = None if self.act_bits else _ptr(self.bias)
            rt.lib.xtc_gemm_f32(x.shape[0], self.out_features, self.in_features, x.ctypes.data, self.in_features,
                                self.panels.ctypes.data, bias, y.ctypes.data, self.out_features, 0)
            if not self.act_bits:
                return y
        else:
            y = x @ self.weight.T
        if self.act_bits:
            y *= scale
        if self.bias is not None:
            y += self.bias
        return y

    @staticmethod
    def concat(parts: list["DenseLinear"]) -> "DenseLinear":
        biases = [p.bias if p.bias is not None else np.zeros(p.out_features, np.float32) for p in parts]
        has_bias = any(p.bias is not None for p in parts)
        return DenseLinear(np.concatenate([p.weight for p in parts]), np.concatenate(biases) if has_bias else None,
                           parts[0].act_bits)


class BinaryLinear:
    """1-bit weights (bit-packed, one fp32 scale per row or group) on 8-bit activations."""

    def __init__(self, bits: np.ndarray, scale: np.ndarray, in_features: int, bias: np.ndarray | None = None):
        rows, groups = scale.shape
        self.out_features, self.in_features = rows, in_features
        self.group = in_features // groups
        if groups == 1:  # one group per row: pad the width to whole 32-weight chunks (zero bits)
            self.padded = -(-in_features // 32) * 32
            self.kgroup = self.padded
        else:
            self.padded, self.kgroup = in_features, self.group
        width = self.padded // 8
        packed = np.zeros((rows, width), np.uint8)
        packed[:, :bits.shape[1]] = bits[:, :width]
        if in_features % 8:  # clear bits past the real width in the last byte
            packed[:, in_features // 8] &= np.uint8((1 << (in_features % 8)) - 1)
        self.bits = packed
        self.alpha = _f32(scale)
        counts = np.unpackbits(packed, axis=1, bitorder="little")[:, :self.padded]
        self.popcount = np.ascontiguousarray(
            counts.reshape(rows, -1, self.kgroup).sum(-1, dtype=np.int32)[:, :groups])
        self.bias = None if bias is None else _f32(bias)
        self.kernel_ok = self.group % 32 == 0 or groups == 1
        self._dense: np.ndarray | None = None
        self._pointers()

    def _pointers(self) -> None:
        # The matrix kernel wants scales and bit counts as (groups, rows rounded up to 8).
        rows, groups = self.alpha.shape
        self.rows8, self.rows32 = -(-rows // 8) * 8, -(-rows // 32) * 32
        self.alpha_t = np.zeros((groups, self.rows32), np.float32)
        self.alpha_t[:, :rows] = self.alpha.T
        self.popcount_t = np.zeros((groups, self.rows32), np.int32)
        self.popcount_t[:, :rows] = self.popcount.T
        # Decoding kernel layout: per block of 32 rows and 4 columns, 16 bytes holding row i's
        # 4 bits (low nibble) and row 16 + i's (high nibble).
        steps = self.padded // 4
        nibbles = np.zeros((self.rows32, steps), np.uint8)
        nibbles[:rows, 0::2] = self.bits & 0x0F
        nibbles[:rows, 1::2] = self.bits >> 4
        blocks = nibbles.reshape(-1, 32, steps)
        self.lut_bits = np.ascontiguousarray((blocks[:, :16] | (blocks[:, 16:] << 4)).transpose(0, 2, 1))
        # Cached raw addresses: `ndarray.ctypes.data` costs microseconds, a decode step has dozens.
        self.ptrs = (self.bits.ctypes.data, self.alpha.ctypes.data, self.popcount.ctypes.data, _ptr(self.bias))
        self.ptrs_t = (self.bits.ctypes.data, self.alpha_t.ctypes.data, self.popcount_t.ctypes.data, _ptr(self.bias))
        self.ptrs_lut = (self.lut_bits.ctypes.data, self.alpha_t.ctypes.data, self.rows32, _ptr(self.bias))

    @classmethod
    def from_codes(cls, codes: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None) -> "BinaryLinear":
        bits = np.packbits(codes > 0, axis=1, bitorder="little")
        return cls(bits, scale, codes.shape[1], bias)

    def codes(self) -> np.ndarray:
        unpacked = np.unpackbits(self.bits, axis=1, bitorder="little")[:, :self.in_features]
        return unpacked.astype(np.int8) * 2 - 1

    def dense(self) -> np.ndarray:
        """The dequantised fp32 weights (the numpy fallback; built on first use)."""
        if self._dense is None:
            self._dense = dequantize(self.codes(), self.alpha)
        return self._dense

    def __call__(self, x: np.ndarray, rt: "Runtime | None" = None) -> np.ndarray:
        lib = rt.lib if rt is not None else None
        if lib is None or not self.kernel_ok:
            q, scale = quantize_rows(x)
            y = (q @ self.dense().T) * scale
            return y + self.bias if self.bias is not None else y
        m, k = x.shape
        work = _Work(m, self.padded, self.alpha.shape[1])
        x = np.ascontiguousarray(x, dtype=np.float32)
        lib.xtc_quant(x.ctypes.data, m, k, k, self.padded, self.kgroup, work.u, work.sx, work.qsum)
        y = np.empty((m, self.out_features), np.float32)
        self.run(rt, m, work, y.ctypes.data, self.out_features, 0)
        return y

    def run(self, rt: "Runtime", m: int, work: "_Work", y: int, ldy: int, beta: int) -> None:
        """y (+)= the product for `m` rows already quantised into `work` (raw addresses)."""
        head = (m, self.out_features, self.padded, self.kgroup, work.u, work.sx, work.qsum)
        if m <= rt.gemv_rows:
            rt.lib.xtc_gemv_lut(*head, *self.ptrs_lut, y, ldy, beta, rt.tables(m * self.padded * 8))
        else:
            rt.lib.xtc_gemm_b1(*head, *self.ptrs_t, y, ldy, beta, rt.scratch(self.rows8 * self.padded), rt.block_rows)

    @staticmethod
    def concat(parts: list["BinaryLinear"]) -> "BinaryLinear":
        biases = [p.bias if p.bias is not None else np.zeros(p.out_features, np.float32) for p in parts]
        has_bias = any(p.bias is not None for p in parts)
        out = BinaryLinear.__new__(BinaryLinear)
        out.__dict__.update(parts[0].__dict__)
        out.out_features = sum(p.out_features for p in parts)
        out.bits = np.concatenate([p.bits for p in parts])
        out.alpha = np.concatenate([p.alpha for p in parts])
        out.popcount = np.concatenate([p.popcount for p in parts])
        out.bias = np.concatenate(biases) if has_bias else None
        out._dense = None
        out._pointers()
        return out


def _concat(parts: list) -> DenseLinear | BinaryLinear:
    same = all(type(p) is type(parts[0]) for p in parts) and len({p.in_features for p in parts}) == 1
    if same and isinstance(parts[0], BinaryLinear) and len({p.alpha.shape[1] for p in parts}) == 1:
        return BinaryLinear.concat(parts)
    if same and isinstance(parts[0], DenseLinear) and len({p.act_bits for p in parts}) == 1:
        return DenseLinear.concat(parts)
    return _Split(parts)


class _Split:
    """Linears that cannot be fused (mixed kinds): run each, concatenate the outputs."""

    def __init__(self, parts):
        self.parts = parts
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)

    def __call__(self, x, rt=None):
        return np.concatenate([_apply(p, x, rt) for p in self.parts], axis=-1)


def _apply(linear, x: np.ndarray, rt) -> np.ndarray:
    return linear(x, rt)


class _Work:
    """Buffers for quantised activations (and a fused block's intermediates), with raw addresses."""

    def __init__(self, rows: int, width: int, groups: int, block: "Block | None" = None, heads_width: int = 0):
        self.arrays = [np.empty((rows, width), np.uint8), np.empty(rows, np.float32),
                       np.empty((rows, groups), np.int32)]
        self.u, self.sx, self.qsum = (a.ctypes.data for a in self.arrays)
        if block is not None:
            for name, cols in (("qkv", block.qkv.out_features), ("att", heads_width), ("gu", block.up.out_features)):
                arr = np.empty((rows, cols), np.float32)
                self.arrays.append(arr)
                setattr(self, name, arr.ctypes.data)


# -- embedding tables ---------------------------------------------------------------------------
class Table:
    """An embedding table, fp32 or int8 codes with a scale per row or group; doubles as the head."""

    def __init__(self, weight: np.ndarray | None = None, codes: np.ndarray | None = None,
                 scale: np.ndarray | None = None):
        self.weight = None if weight is None else _f32(weight)
        self.codes = None if codes is None else np.ascontiguousarray(codes, dtype=np.int8)
        self.scale = None if scale is None else _f32(scale)
        self.rows, self.dim = (self.weight if weight is not None else self.codes).shape
        self.group = self.dim if self.scale is None else self.dim // self.scale.shape[1]
        self._dense: np.ndarray | None = None

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        if self.weight is not None:
            return self.weight[ids]
        return dequantize(self.codes[ids], self.scale[ids])

    def dense(self) -> np.ndarray:
        if self.weight is not None:
            return self.weight
        if self._dense is None:
            self._dense = dequantize(self.codes, self.scale)
        return self._dense

    def project(self, x: np.ndarray, rt: "Runtime") -> np.ndarray:
        """x @ table^T: the output head."""
        lib = rt.lib
        if lib is not None:
            x = np.ascontiguousarray(x, dtype=np.float32)
            y = np.empty((x.shape[0], self.rows), np.float32)
            if self.weight is not None:
                lib.xtc_gemv_f32rows(x.shape[0], self.rows, self.dim, x.ctypes.data, self.dim, self.weight.ctypes.data,
                                     y.ctypes.data, self.rows)
                return y
            if self.dim % 8 == 0 and self.group % 8 == 0:
                lib.xtc_gemv_i8f(x.shape[0], self.rows, self.dim, self.group, x.ctypes.data, self.dim,
                                 self.codes.ctypes.data, self.scale.ctypes.data, y.ctypes.data, self.rows)
                return y
        return x @ self.dense().T


# -- the model ------------------------------------------------------------------------------------
@dataclass
class Norm:
    weight: np.ndarray
    bias: np.ndarray | None
    eps: float
    rms: bool

    def __post_init__(self) -> None:
        self.weight = _f32(self.weight)
        self.bias = None if self.bias is None else _f32(self.bias)
        self.ptrs = (self.weight.ctypes.data, _ptr(self.bias))

    def __call__(self, x: np.ndarray, rt: "Runtime") -> np.ndarray:
        m, k = x.shape
        if rt.lib is not None:
            out = np.empty_like(x)
            rt.lib.xtc_norm(x.ctypes.data, m, k, k, *self.ptrs, self.eps, int(self.rms), out.ctypes.data, k)
            return out
        if self.rms:
            return self.weight * (x * (1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(self.eps))))
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + np.float32(self.eps)) * self.weight
        return y + self.bias if self.bias is not None else y


@dataclass
class Block:
    norm1: Norm
    norm2: Norm
    qkv: object  # fused q, k, v projection
    out: object
    up: object  # GPT-2: c_fc; Llama: fused gate and up
    down: object


@dataclass
class Spec:
    """Everything the forward pass needs, independent of where the weights came from."""

    arch: str
    n_heads: int
    n_kv_heads: int
    head_dim: int
    activation: str
    positions: int
    embed: Table
    head: Table
    final_norm: Norm
    blocks: list[Block]
    pos_embed: Table | None = None
    rope: tuple[np.ndarray, np.ndarray] | None = None  # cos, sin: (positions, head_dim)
    attn_scale: float | None = None


@dataclass
class KVCache:
    """Pre-allocated keys/values per layer, (kv heads, context, head dim); `length` tokens are valid."""

    keys: list
    values: list
    length: int = 0
    tokens: list[int] = field(default_factory=list)


class Runtime:
    """A model ready for CPU completion: `prefill(ids)` then `step(token)`, both returning
    next-token logits (a float32 numpy vector). Consecutive calls share the KV cache for the
    common prefix."""

    gemv_rows = 4  # up to this many new tokens use the matrix-vector kernel
    block_rows = 64  # rows of activations per cache block in the matrix kernel

    def __init__(self, model, tokenizer=None, name: str = "model", threads: int | None = None,
                 max_context: int = 2048, *, spec: Spec | None = None, kernels: bool = True):
        """`model`: a transformers model (plain or fake-quantised), or None with `spec` (weights
        read by `spec_from_directory`). `kernels=False` forces the numpy path (for tests)."""
        self.threads = threads or default_threads()
        self.lib = _kernels.load() if kernels else None
        if self.lib is not None:
            self.lib.xtc_set_threads(self.threads)
        if spec is None:
            spec = spec_from_model(model, max_context)
            import torch

            torch.set_num_threads(self.threads)
        self.spec, self.tokenizer, self.name = spec, tokenizer, name
        self.config = getattr(model, "config", None)
        self.arch = spec.arch
        self.is_llama = spec.arch == "llama"
        self.n_heads, self.n_kv_heads, self.head_dim = spec.n_heads, spec.n_kv_heads, spec.head_dim
        self.max_context = min(max_context, spec.positions)
        self.blocks = spec.blocks
        self.attn_scale = spec.attn_scale or 1.0 / math.sqrt(self.head_dim)
        self._scratch = np.empty(0, np.int8)
        self._tables = np.empty(0, np.uint8)
        self.loader = "model"
        self.cache = self._empty_cache()
        self.fused = [self._can_fuse(b) for b in self.blocks]
        if self.lib is not None:
            for b in self.blocks:
                for lin in (b.qkv, b.out, b.up, b.down):
                    for part in getattr(lin, "parts", [lin]):
                        if isinstance(part, DenseLinear):
                            part.prepare()
        self._works: dict[int, list[_Work]] = {}
        if self.spec.rope is not None:
            self._rope_ptrs = (self.spec.rope[0].ctypes.data, self.spec.rope[1].ctypes.data)
        else:
            self._rope_ptrs = (None, None)

    def _can_fuse(self, block: Block) -> bool:
        """A block whose four linears are binary kernels runs as a few fused kernel calls."""
        if self.lib is None:
            return False
        if not all(isinstance(lin, BinaryLinear) and lin.kernel_ok for lin in (block.qkv, block.out, block.up, block.down)):
            return False
        act = self.spec.activation
        return act == "silu" if self.is_llama else act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")

    def _work(self, n: int, block: Block) -> "_Work":
        """Buffers for a fused block; kept for decoding-sized calls, fresh for a long prefill."""
        linears = (block.qkv, block.out, block.up, block.down)
        width = max(lin.padded for lin in linears)
        groups = max(lin.alpha.shape[1] for lin in linears)
        if n > self.gemv_rows:
            return _Work(n, width, groups, block, self.n_heads * self.head_dim)
        key = (n, width, groups, block.qkv.out_features, block.up.out_features)
        if key not in self._works:
            self._works[key] = _Work(n, width, groups, block, self.n_heads * self.head_dim)
        return self._works[key]

    def _empty_cache(self) -> KVCache:
        """Keys in panels of 16 positions (kv heads, capacity / 16, head dim, 16), so the attention
        kernel reads 16 keys x head dim contiguously; values (kv heads, capacity, head dim). The
        capacity is the context rounded up to 16."""
        cap = -(-self.max_context // 16) * 16
        kv, hd = self.n_kv_heads, self.head_dim
        # np.zeros maps untouched pages lazily: only the context actually used costs memory.
        cache = KVCache([np.zeros((kv, cap // 16, hd, 16), np.float32) for _ in self.blocks],
                        [np.zeros((kv, cap, hd), np.float32) for _ in self.blocks])
        self._kv_ptrs = [(k.ctypes.data, v.ctypes.data) for k, v in zip(cache.keys, cache.values)]
        self._cap = cap
        return cache

    def tables(self, nbytes: int) -> int:
        if self._tables.size < nbytes:
            self._tables = np.empty(nbytes, np.uint8)
        return self._tables.ctypes.data

    def scratch(self, nbytes: int) -> int:
        if self._scratch.size < nbytes:
            self._scratch = np.empty(nbytes, np.int8)
        return self._scratch.ctypes.data

    @property
    def vocab_size(self) -> int:
        return self.spec.head.rows

    @property
    def uses_kernels(self) -> bool:
        return self.lib is not None

    # -- the forward pass ---------------------------------------------------------------------
    def forward(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        """Feed `ids` after the cached tokens; logits for the last position (or all positions)."""
        start, n = self.cache.length, len(ids)
        if start + n > self.max_context:
            raise ValueError(f"context of {start + n} tokens exceeds the runtime's {self.max_context}")
        spec = self.spec
        tokens = np.asarray(ids, dtype=np.int64)
        x = spec.embed.lookup(tokens)
        if spec.pos_embed is not None:
            x = x + spec.pos_embed.lookup(np.arange(start, start + n))
        x = np.ascontiguousarray(x, dtype=np.float32)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Only the last position reaches the head: the last layer needs keys and values of
            # every new token, but its attention output and MLP for the last one only.
            only_last = i == last and n > 1 and not all_logits
            if self.fused[i]:
                self._block_fused(i, block, x, start, n, only_last)
                if only_last:
                    x = x[-1:]
            elif only_last:
                x = x[-1:] + self._attention(i, block, block.norm1(x, self), start, n, only_last=True)
                x += self._mlp(block, block.norm2(x, self))
            else:
                x += self._attention(i, block, block.norm1(x, self), start, n)
                x += self._mlp(block, block.norm2(x, self))
        self.cache.length = start + n
        self.cache.tokens.extend(ids)
        h = spec.final_norm(x if all_logits else x[-1:], self)
        logits = spec.head.project(h, self)
        return logits if all_logits else logits[0]

    def _block_fused(self, i: int, b: Block, x: np.ndarray, start: int, n: int, only_last: bool) -> None:
        """One binary block in place on the residual stream x: ten kernel calls, no temporaries."""
        lib, w = self.lib, self._work(n, b)
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        D, width = x.shape[1], b.qkv.out_features
        xp = x.ctypes.data
        n1, n2 = b.norm1, b.norm2
        lib.xtc_norm_quant(xp, n, D, *n1.ptrs, n1.eps, int(n1.rms), b.qkv.padded, b.qkv.kgroup, w.u, w.sx, w.qsum)
        b.qkv.run(self, n, w, w.qkv, width, 0)
        kp, vp = self._kv_ptrs[i]
        lib.xtc_rope_kv(w.qkv, n, start, H, KV, hd, width, *self._rope_ptrs, kp, vp, self._cap)
        q, m = w.qkv, n
        if only_last:
            q, m, start, xp = q + 4 * (n - 1) * width, 1, start + n - 1, xp + 4 * (n - 1) * D
        lib.xtc_attention(m, start, H, KV, hd, q, width, kp, vp, self._cap, w.att, H * hd, self.attn_scale)
        lib.xtc_quant(w.att, m, H * hd, H * hd, b.out.padded, b.out.kgroup, w.u, w.sx, w.qsum)
        b.out.run(self, m, w, xp, D, 1)
        lib.xtc_norm_quant(xp, m, D, *n2.ptrs, n2.eps, int(n2.rms), b.up.padded, b.up.kgroup, w.u, w.sx, w.qsum)
        b.up.run(self, m, w, w.gu, b.up.out_features, 0)
        lib.xtc_act_quant(0 if self.is_llama else 1, w.gu, m, b.down.in_features, b.up.out_features, b.down.padded,
                          b.down.kgroup, w.u, w.sx, w.qsum)
        b.down.run(self, m, w, xp, D, 1)

    def _attention(self, i: int, block: Block, h: np.ndarray, start: int, n: int, only_last: bool = False) -> np.ndarray:
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = _apply(block.qkv, h, self)  # (n, (H + 2 KV) hd)
        width = qkv.shape[1]
        lib = self.lib
        if self.spec.rope is not None:
            cos, sin = self.spec.rope
            if lib is not None:
                lib.xtc_rope(qkv.ctypes.data, n, H + KV, hd, width, cos.ctypes.data, sin.ctypes.data, start)
            else:
                qk = qkv[:, :(H + KV) * hd].reshape(n, H + KV, hd)
                qk[:] = _rotate(qk, cos[start:start + n, None], sin[start:start + n, None])
        keys, values = self.cache.keys[i], self.cache.values[i]
        pos = np.arange(start, start + n)
        keys[:, pos // 16, :, pos % 16] = qkv[:, H * hd:(H + KV) * hd].reshape(n, KV, hd)
        values[:, start:start + n] = qkv[:, (H + KV) * hd:].reshape(n, KV, hd).transpose(1, 0, 2)
        if only_last:
            qkv, start, n = qkv[-1:], start + n - 1, 1
        out = np.empty((n, H * hd), np.float32)
        if lib is not None:
            lib.xtc_attention(n, start, H, KV, hd, qkv.ctypes.data, width, *self._kv_ptrs[i], self._cap,
                              out.ctypes.data, H * hd, self.attn_scale)
        else:
            out[:] = _attention_numpy(qkv[:, :H * hd].reshape(n, H, hd), keys, values, start, self.attn_scale)
        return _apply(block.out, out, self)

    def _mlp(self, block: Block, h: np.ndarray) -> np.ndarray:
        a = _apply(block.up, h, self)
        if self.is_llama:
            f = a.shape[1] // 2
            if self.lib is not None and self.spec.activation == "silu":
                out = np.empty((a.shape[0], f), np.float32)
                self.lib.xtc_silu_mul(a.ctypes.data, a.shape[0], f, a.shape[1], out.ctypes.data, f)
                a = out
            else:
                a = _activate(a[:, :f], self.spec.activation) * a[:, f:]
        elif self.lib is not None and self.spec.activation in ("gelu_new", "gelu_pytorch_tanh"):
            self.lib.xtc_gelu_tanh(a.ctypes.data, a.size)
        else:
            a = _activate(a, self.spec.activation)
        return _apply(block.down, np.ascontiguousarray(a), self)

    # -- prefix reuse ---------------------------------------------------------------------------
    def prefill(self, ids: list[int]) -> np.ndarray:
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

    def step(self, token: int) -> np.ndarray:
        return self.forward([token])

    def reset(self) -> None:
        self.cache.length = 0
        self.cache.tokens.clear()


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    rotated = np.concatenate((-x[..., half:], x[..., :half]), axis=-1)
    return x * cos + rotated * sin


def _attention_numpy(q: np.ndarray, keys: np.ndarray, values: np.ndarray, start: int, scale: float) -> np.ndarray:
    n, H, hd = q.shape
    KV = keys.shape[0]
    end = start + n
    KV_, blocks, hd_, _ = keys.shape
    kt = keys.transpose(0, 2, 1, 3).reshape(KV_, hd_, blocks * 16)[:, :, :end]  # (KV, hd, end)
    v = values[:, :end]  # (KV, end, hd)
    qh = q.transpose(1, 0, 2).reshape(KV, H // KV * n, hd)  # heads sharing a kv head, grouped
    scores = (qh @ kt).reshape(H, n, end) * np.float32(scale)
    visible = np.arange(end)[None, :] <= (start + np.arange(n))[:, None]
    scores = np.where(visible, scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    out = scores.reshape(KV, H // KV * n, end) @ v
    return out.reshape(H, n, hd).transpose(1, 0, 2).reshape(n, H * hd)


def _activate(x: np.ndarray, name: str) -> np.ndarray:
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))
    if name == "relu":
        return np.maximum(x, 0)
    if name == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float32])
        return 0.5 * x * (1.0 + erf(x / np.float32(math.sqrt(2.0))))
    raise XtcError(f"activation {name!r} is not supported by the runtime")


# -- weights from a transformers model (plain or fake-quantised) ---------------------------------
def spec_from_model(model, max_context: int) -> Spec:
    """Read a transformers model's weights once (torch is already loaded for such a model)."""
    import torch

    from xtc.train import arch as archs
    from xtc.train.quant import (QuantEmbedding, QuantHead, QuantLinear, quantize_weight,
                           symmetric_int)

    config = model.config
    arch = archs.arch_of(config)

    def np_(t) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def linear(module):
        with torch.no_grad():
            if isinstance(module, QuantLinear):
                codes, scale = quantize_weight(module.weight.detach().float(), module.weight_bits, module.group_size)
                bias = None if module.bias is None else np_(module.bias)
                if module.weight_bits == 1 and module.act_bits == 8:
                    return BinaryLinear.from_codes(codes.numpy(), scale.numpy(), bias)
                return DenseLinear(dequantize(codes.numpy(), scale.numpy()), bias, module.act_bits)
            lin = archs.as_linear(module)
            return DenseLinear(np_(lin.weight), None if lin.bias is None else np_(lin.bias))

    tables: dict[int, Table] = {}

    def table(module) -> Table:
        source = module.source if isinstance(module, QuantHead) else module
        if id(source.weight) in tables:
            return tables[id(source.weight)]
        with torch.no_grad():
            if isinstance(source, QuantEmbedding):
                codes, scale = symmetric_int(source.weight.detach().float(), source.bits, source.group_size)
                t = Table(codes=codes.numpy(), scale=scale.numpy())
            else:
                t = Table(weight=np_(source.weight))
        tables[id(source.weight)] = t
        return t

    def norm(module, rms: bool) -> Norm:
        eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-5)
        bias = getattr(module, "bias", None)
        return Norm(np_(module.weight), None if bias is None else np_(bias), float(eps), rms)

    is_llama = arch.name == "llama"
    blocks = []
    for layer in archs.decoder_layers(model):
        if is_llama:
            a, m = layer.self_attn, layer.mlp
            blocks.append(Block(norm(layer.input_layernorm, True), norm(layer.post_attention_layernorm, True),
                                _concat([linear(a.q_proj), linear(a.k_proj), linear(a.v_proj)]), linear(a.o_proj),
                                _concat([linear(m.gate_proj), linear(m.up_proj)]), linear(m.down_proj)))
        else:
            blocks.append(Block(norm(layer.ln_1, False), norm(layer.ln_2, False), linear(layer.attn.c_attn),
                                linear(layer.attn.c_proj), linear(layer.mlp.c_fc), linear(layer.mlp.c_proj)))
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", max_context)
    embed = table(model.get_submodule(arch.embeddings[0]))
    head_module = model.get_output_embeddings()
    head = table(head_module) if head_module is not None else embed
    rope = None
    if is_llama:
        rotary = model.get_submodule("model.rotary_emb")
        length = min(max_context, positions)
        with torch.no_grad():
            cos, sin = rotary(torch.zeros(1, dtype=torch.float32), torch.arange(length)[None])
        rope = (_f32(cos[0].numpy()), _f32(sin[0].numpy()))
    return Spec(
        arch=arch.name, n_heads=n_heads, n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
        head_dim=head_dim, activation=_activation_name(config), positions=positions, embed=embed, head=head,
        final_norm=norm(model.get_submodule(arch.final_norm), is_llama), blocks=blocks,
        pos_embed=None if is_llama else table(model.get_submodule(arch.embeddings[1])), rope=rope,
        attn_scale=_attn_scale(config, head_dim))


def _activation_name(config) -> str:
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return get("hidden_act", None) or get("activation_function", None) or "gelu_new"


def _attn_scale(config, head_dim: int) -> float:
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    if get("model_type") == "gpt2" and not get("scale_attn_weights", True):
        return 1.0
    return 1.0 / math.sqrt(head_dim)


# -- weights straight from a directory (packed or Hugging Face), without torch -------------------
class _Unsupported(Exception):
    """The direct loader cannot read this directory; the transformers route will (or will explain)."""


def _rope_tables(config: dict, length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = params.get("rope_type") or params.get("type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default" or config.get("partial_rotary_factor", 1.0) != 1.0:
        raise _Unsupported(f"rope type {kind}")
    theta = params.get("rope_theta") or config.get("rope_theta") or 10000.0
    # As transformers computes it: inv_freq in fp32, positions x inv_freq in fp32.
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))).astype(np.float32)
    freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return _f32(np.cos(emb)), _f32(np.sin(emb))


class _Tensors:
    """Named tensors of a directory's safetensors file(s), read on demand as numpy arrays."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise _Unsupported("no safetensors weights")
        self.where: dict[str, object] = {}
        self.handles = []
        try:
            for f in files:
                h = safe_open(str(f), framework="numpy")
                self.handles.append(h)
                for key in h.keys():
                    self.where[key] = h
        except Exception as exc:  # corrupt file: let the canonical loader report it
            raise _Unsupported(str(exc)) from None

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def get(self, key: str) -> np.ndarray:
        if key not in self.where:
            raise _Unsupported(f"missing tensor {key}")
        try:
            return self.where[key].get_tensor(key)
        except Exception as exc:  # bf16 and other dtypes numpy cannot hold
            raise _Unsupported(f"{key}: {exc}") from None


def spec_from_directory(directory: Path, max_context: int) -> Spec:
    """A packed (`xtc` in config.json) or plain Hugging Face directory, read with numpy only."""
    config = json.loads((directory / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise _Unsupported(f"architecture {model_type}")
    settings = config.get("xtc") or {}
    if settings.get("version", 0) > 1:
        raise _Unsupported("newer packed format")
    weight_bits, act_bits = settings.get("weight_bits"), settings.get("act_bits")
    tensors = _Tensors(directory)
    is_llama = model_type == "llama"

    def packed_codes(name: str, bits: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        packed = tensors.get(f"{name}.weight.packed")
        scale = tensors.get(f"{name}.weight.scale").astype(np.float32)
        return _unpack_ints(packed, bits, cols), scale

    def linear(name: str, rows: int, cols: int):
        bias = tensors.get(f"{name}.bias").astype(np.float32) if f"{name}.bias" in tensors else None
        if f"{name}.weight.packed" in tensors:
            bits = weight_bits or 1
            if bits == 1 and act_bits == 8:
                packed = tensors.get(f"{name}.weight.packed")
                scale = tensors.get(f"{name}.weight.scale").astype(np.float32)
                if packed.shape != (rows, -(-cols // 8)):
                    raise _Unsupported(f"{name}: packed shape {packed.shape}")
                return BinaryLinear(packed, scale, cols, bias)
            codes, scale = packed_codes(name, bits, cols)
            return DenseLinear(dequantize(codes, scale), bias, act_bits)
        w = tensors.get(f"{name}.weight")
        if not is_llama:  # GPT-2's Conv1D stores (in, out)
            w = w.T
        if w.shape != (rows, cols):
            raise _Unsupported(f"{name}: shape {w.shape}")
        return DenseLinear(w, bias)

    def table(name: str, cols: int) -> Table:
        if f"{name}.weight.packed" in tensors:
            bits = settings.get("embed_bits") or 8
            codes, scale = packed_codes(name, bits, cols)
            return Table(codes=codes, scale=scale)
        return Table(weight=tensors.get(f"{name}.weight"))

    def norm(name: str, eps: float, rms: bool) -> Norm:
        bias = tensors.get(f"{name}.bias") if not rms else None
        return Norm(_f32(tensors.get(f"{name}.weight")), None if bias is None else _f32(bias), float(eps), rms)

    blocks = []
    if is_llama:
        d, n_heads = config["hidden_size"], config["num_attention_heads"]
        n_kv = config.get("num_key_value_heads") or n_heads
        hd = config.get("head_dim") or d // n_heads
        f, eps = config["intermediate_size"], config.get("rms_norm_eps", 1e-6)
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}"
            blocks.append(Block(
                norm(f"{p}.input_layernorm", eps, True), norm(f"{p}.post_attention_layernorm", eps, True),
                _concat([linear(f"{p}.self_attn.q_proj", n_heads * hd, d), linear(f"{p}.self_attn.k_proj", n_kv * hd, d),
                         linear(f"{p}.self_attn.v_proj", n_kv * hd, d)]),
                linear(f"{p}.self_attn.o_proj", d, n_heads * hd),
                _concat([linear(f"{p}.mlp.gate_proj", f, d), linear(f"{p}.mlp.up_proj", f, d)]),
                linear(f"{p}.mlp.down_proj", d, f)))
        embed = table("model.embed_tokens", d)
        final = norm("model.norm", eps, True)
        positions = config.get("max_position_embeddings") or max_context
        pos_embed, rope = None, _rope_tables(config, min(max_context, positions), hd)
    else:
        d, n_heads = config["n_embd"], config["n_head"]
        n_kv, hd = n_heads, d // n_heads
        f, eps = config.get("n_inner") or 4 * d, config.get("layer_norm_epsilon", 1e-5)
        if config.get("scale_attn_by_inverse_layer_idx") or config.get("add_cross_attention"):
            raise _Unsupported("GPT-2 variant")
        for i in range(config["n_layer"]):
            p = f"transformer.h.{i}"
            blocks.append(Block(
                norm(f"{p}.ln_1", eps, False), norm(f"{p}.ln_2", eps, False),
                linear(f"{p}.attn.c_attn", 3 * d, d), linear(f"{p}.attn.c_proj", d, d),
                linear(f"{p}.mlp.c_fc", f, d), linear(f"{p}.mlp.c_proj", d, f)))
        embed = table("transformer.wte", d)
        final = norm("transformer.ln_f", eps, False)
        positions = config.get("n_positions") or config.get("max_position_embeddings") or max_context
        pos_embed, rope = table("transformer.wpe", d), None
    head = embed
    if "lm_head.table.weight.packed" in tensors:
        head = table("lm_head.table", d)
    elif "lm_head.weight" in tensors:
        head = table("lm_head", d)
    elif not config.get("tie_word_embeddings", True):
        raise _Unsupported("untied head without weights")
    return Spec(arch=model_type, n_heads=n_heads, n_kv_heads=n_kv, head_dim=hd, activation=_activation_name(config),
                positions=positions, embed=embed, head=head, final_norm=final, blocks=blocks, pos_embed=pos_embed,
                rope=rope, attn_scale=_attn_scale(config, hd))


def _unpack_ints(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """`xtc.train.pack.unpack_ints` in numpy: int8 codes with `length` entries in the last dim."""
    if bits == 8:
        return packed.astype(np.int8)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    fields = np.stack([(packed >> (bits * j)) & mask for j in range(per_byte)], axis=-1)
    unsigned = fields.reshape(*packed.shape[:-1], -1)[..., :length].astype(np.int16)
    codes = unsigned * 2 - 1 if bits == 1 else unsigned - 2 ** (bits - 1)
    return codes.astype(np.int8)


# -- a tokenizer without transformers -------------------------------------------------------------
class _Added:
    def __init__(self, content: str, special: bool):
        self.content, self.special = content, special


class FastTokenizer:
    """The parts of a transformers tokenizer that completion uses, over `tokenizers` directly
    (importing transformers would import torch)."""

    SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")

    def __init__(self, directory: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        cfg_path = directory / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.clean_up_tokenization_spaces = bool(cfg.get("clean_up_tokenization_spaces", False))
        self.added_tokens_decoder = {i: _Added(t.content, bool(t.special))
                                     for i, t in self._tok.get_added_tokens_decoder().items()}
        names = {}
        for key in self.SPECIAL_KEYS:
            value = cfg.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            names[key] = value
        extra = cfg.get("additional_special_tokens") or cfg.get("extra_special_tokens") or []
        if isinstance(extra, dict):
            extra = list(extra.values())
        extra = [t.get("content") if isinstance(t, dict) else t for t in extra]
        for key, value in names.items():
            setattr(self, key, value)
            setattr(self, f"{key}_id", self._tok.token_to_id(value) if value else None)
        special = [v for v in list(names.values()) + extra if v]
        self.all_special_tokens = list(dict.fromkeys(special))
        self.all_special_ids = [i for i in (self._tok.token_to_id(t) for t in self.all_special_tokens) if i is not None]

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        if isinstance(ids, int):
            ids = [ids]
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        if clean:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._tok.id_to_token(ids)
        return [self._tok.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            i = self._tok.token_to_id(tokens)
            return i if i is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)


def _tokenizer_for(directory: Path):
    if (directory / "tokenizer.json").exists():
        try:
            return FastTokenizer(directory)
        except Exception:  # an unusual tokenizer file: transformers knows more formats
            pass
    raise _Unsupported("tokenizer")


# -- loading ----------------------------------------------------------------------------------------
def load_runtime(src: str, threads: int | None = None, max_context: int = 2048) -> Runtime:
    """Load any model SRC (packed dir, HF dir, .gguf, installed name, hub id) for CPU completion.

    Packed and Hugging Face directories are read directly (numpy, no torch); anything the direct
    reader does not handle goes through `xtc.core.sources.load_model`, which also produces the
    user-facing errors for bad input."""
    path = Path(src).expanduser()
    name = path.name
    if not path.exists() and not src.startswith((".", "/", "~")):
        installed = _installed(src)
        if installed is not None:
            path, name = installed, src
    if path.is_dir() and (path / "config.json").exists():
        try:
            spec = spec_from_directory(path, max_context)
            tokenizer = _tokenizer_for(path)
            rt = Runtime(None, tokenizer, name, threads=threads, max_context=max_context, spec=spec)
            rt.loader = "direct"
            return rt
        except (_Unsupported, ValueError, KeyError, OSError):
            pass
    from xtc.core.sources import load_model

    loaded = load_model(str(path) if path.exists() else src)
    rt = Runtime(loaded.model, loaded.tokenizer, name if path.exists() else loaded.name, threads=threads,
                 max_context=max_context)
    rt.loader = "transformers"
    return rt


def _installed(name: str) -> Path | None:
    from xtc.core.store import Store

    try:
        return Store().resolve(name)
    except XtcError:
        return None
