"""The runtime's weights in their compute form: linear layers (fp32, or bit-packed 1-bit weights on
8-bit activations), embedding tables (fp32 or int8, doubling as the output head), norms, and the
`Spec` that holds a whole model. Each layer runs on the compiled kernels (`xtc.infer.kernels`) when
the runtime has them, else in numpy.

Binary linears (1-bit weights, 8-bit activations, XTC's W1A8) run on the bit-packed weights:
activations are quantised per token to int8 exactly as `xtc.train.quant` does, the +-1 products are
summed exactly in integers, and the per-row (or group) scales are applied in fp32, so the result
equals the fake-quantised student's up to float rounding. Every other linear (plain models,
ternary or unquantised-activation students) is an fp32 matmul on dequantised weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from xtc.infer.runtime import Runtime


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def as_f32(a) -> np.ndarray:
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
        self._weight: np.ndarray | None = as_f32(weight)
        self.panels: np.ndarray | None = None
        self.bias = None if bias is None else as_f32(bias)
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
        self.alpha = as_f32(scale)
        counts = np.unpackbits(packed, axis=1, bitorder="little")[:, :self.padded]
        self.popcount = np.ascontiguousarray(
            counts.reshape(rows, -1, self.kgroup).sum(-1, dtype=np.int32)[:, :groups])
        self.bias = None if bias is None else as_f32(bias)
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
        work = Work(m, self.padded, self.alpha.shape[1])
        x = np.ascontiguousarray(x, dtype=np.float32)
        lib.xtc_quant(x.ctypes.data, m, k, k, self.padded, self.kgroup, work.u, work.sx, work.qsum)
        y = np.empty((m, self.out_features), np.float32)
        self.run(rt, m, work, y.ctypes.data, self.out_features, 0)
        return y

    def run(self, rt: "Runtime", m: int, work: "Work", y: int, ldy: int, beta: int) -> None:
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


def fuse(parts: list) -> DenseLinear | BinaryLinear | _Split:
    """One linear computing `parts` side by side (q, k, v; gate, up), fused where the kinds agree."""
    if len(parts) == 1:
        return parts[0]
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
        return np.concatenate([p(x, rt) for p in self.parts], axis=-1)


class Work:
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
        self.weight = None if weight is None else as_f32(weight)
        self.codes = None if codes is None else np.ascontiguousarray(codes, dtype=np.int8)
        self.scale = None if scale is None else as_f32(scale)
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
        self.weight = as_f32(self.weight)
        self.bias = None if self.bias is None else as_f32(self.bias)
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
