"""The runtime's weights in their compute form: linear layers, embedding tables (which double as
the output head), norms, and the `Spec` that holds a whole model. Each layer runs on the compiled
kernels (`xtc.infer.kernels`) when the runtime has them, else in numpy.

Quantised weights follow the packed format (`xtc.core.format`): unsigned codes `q` with an fp16
scale and min per output row and group, `w = scale * q + min`. One linear class per family:

- `DenseLinear`: fp32 weights (plain models, and students whose activations stay fp32);
- `BinaryLinear`: 1-bit codes (XTC's W1A8), bit-packed: a bit-expanding GEMM for prefill, a
  lookup-table GEMV for decoding;
- `AffineLinear`: 2-, 3- and 4-bit codes (ternary included), re-laid out at load time for the
  affine kernels' int8 dot products.

The last two quantise their input per token to int8 exactly as the training side does
(`quantize_rows`), sum integer products exactly, and apply scales and mins per group in fp32, so
the result equals the fake-quantised student's up to float rounding. Their numpy path (and the
head's, and the norms') rounds exactly as the kernels do (`xtc.infer.exact`): the same logits on
every instruction set and without kernels. The on-disk layout is fixed;
the in-memory layouts are the kernels' (`xtc.infer.layouts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xtc.core.format import dequantize_affine
from xtc.infer import exact
from xtc.infer.layouts import affine_codes, affine_layout, head4_codes, head4_layout, round_up, scale_min_layout


class Kernels:
    """What layers need from their runtime: the compiled library (None: numpy), how the matrix
    kernels split work, and reusable scratch memory. `Runtime.ops` is one; tests and benchmarks make
    their own around a library."""

    gemv_rows = 4  # up to this many tokens use the matrix-vector kernels
    block_rows = 64  # tokens per cache block in the matrix kernels

    def __init__(self, lib=None):
        self.lib = lib
        self.vnni = getattr(lib, "variant", None) == "avx512-vnni"  # AVX-512 VNNI kernels
        self._scratch = np.empty(0, np.int8)
        self._tables = np.empty(0, np.uint8)

    def tables(self, nbytes: int) -> int:
        """Scratch for the lookup-table kernel's per-token tables (raw address)."""
        if self._tables.size < nbytes:
            self._tables = np.empty(nbytes, np.uint8)
        return self._tables.ctypes.data

    def scratch(self, nbytes: int) -> int:
        """Scratch for the binary matrix kernel's expanded weights (raw address)."""
        if self._scratch.size < nbytes:
            self._scratch = np.empty(nbytes, np.int8)
        return self._scratch.ctypes.data


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class Addressed:
    """A layer with `_transient` attributes: raw addresses of its arrays (kept because
    `ndarray.ctypes.data` costs microseconds and a decode step reads dozens) and caches built on
    first use. A copy (pickle, the prepared-layout cache `xtc.infer.prepared`) leaves them out and
    recomputes the addresses with `_bind` where it lands."""

    _transient: tuple[str, ...] = ()

    def _bind(self) -> None:
        """Set the attributes holding raw addresses from the arrays."""

    def __getstate__(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in self._transient}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.update(dict.fromkeys(self._transient))
        self._bind()


def as_f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _fp16_exact(a) -> np.ndarray:
    """Scales and mins as the format stores them (fp16), held in fp32 for numpy."""
    return as_f32(np.asarray(a, np.float32).astype(np.float16))


# -- linear layers ------------------------------------------------------------------------------
def quantize_rows(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The training side's `quantize_activations` in numpy: integer codes (fp32) and a scale per row."""
    qmax = np.float32(2 ** (bits - 1) - 1)
    scale = np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-8)) / qmax
    return np.clip(np.rint(x / scale), -qmax, qmax), scale


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

    def prepare(self, rt: "Kernels | None" = None) -> None:
        """Switch to the kernel layout (once; frees the row-major copy)."""
        if self.panels is None:
            n, k = self.weight.shape
            padded = np.zeros((round_up(n, 16), k), np.float32)
            padded[:n] = self.weight
            self.panels = np.ascontiguousarray(padded.reshape(-1, 16, k).transpose(0, 2, 1))
            self._weight = None

    def __call__(self, x: np.ndarray, rt: "Kernels | None" = None) -> np.ndarray:
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
        return DenseLinear(np.concatenate([p.weight for p in parts]), _concat_bias(parts), parts[0].act_bits)


def _concat_bias(parts) -> np.ndarray | None:
    if all(p.bias is None for p in parts):
        return None
    return np.concatenate([p.bias if p.bias is not None else np.zeros(p.out_features, np.float32) for p in parts])


class Int8Linear(Addressed):
    """A linear on 8-bit activations run by integer kernels (the base of the binary and affine
    families). Subclasses set `padded` (input width the kernels see, zero-padded), `kgroup` (the
    group length over that width), `kernel_ok`, `bias`, and define `run` and `dense`."""

    in_features: int
    out_features: int
    padded: int
    kgroup: int
    kernel_ok: bool
    bias: np.ndarray | None
    _transient = ("_codes", "_dense")

    @property
    def groups(self) -> int:
        return self.padded // self.kgroup

    @property
    def levels(self) -> int:
        return 2 if isinstance(self, BinaryLinear) else 2 ** self.bits

    def codes(self) -> np.ndarray:
        raise NotImplementedError

    def plain_codes(self) -> np.ndarray:
        """The codes (rows, in_features) as uint8, kept for the numpy path (built on first use)."""
        if getattr(self, "_codes", None) is None:
            self._codes = np.ascontiguousarray(self.codes(), np.uint8)
        return self._codes

    def prepare(self, rt: "Kernels") -> None:
        """Build what the runtime's kernel variant needs beyond the common layout (once)."""

    def dense(self) -> np.ndarray:
        raise NotImplementedError

    def run(self, rt: "Kernels", m: int, work: "Work", y: int, ldy: int, beta: int) -> None:
        """y (+)= the product for `m` rows already quantised into `work` (raw addresses)."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray, rt: "Kernels | None" = None) -> np.ndarray:
        lib = rt.lib if rt is not None else None
        if lib is None or not self.kernel_ok:
            q, scale = quantize_rows(x)
            return exact.int8_linear(q, scale, self.plain_codes(), self.levels, self.scale, self.mins, self.bias)
        self.prepare(rt)
        m, k = x.shape
        work = Work(m, self.padded, self.groups)
        x = np.ascontiguousarray(x, dtype=np.float32)
        lib.xtc_quant(x.ctypes.data, m, k, k, self.padded, self.kgroup, work.q, work.sx, work.qsum)
        y = np.empty((m, self.out_features), np.float32)
        self.run(rt, m, work, y.ctypes.data, self.out_features, 0)
        return y


def _padding(in_features: int, groups: int) -> tuple[int, int, bool]:
    """(padded width, group length over it, whether the kernels run it). One group per row pads
    the width to whole 32-weight chunks (zero codes meet zero activations: no contribution);
    real groups must be whole chunks already."""
    if groups == 1:
        padded = round_up(in_features, 32)
        return padded, padded, True
    group = in_features // groups
    return in_features, group, group % 32 == 0


class BinaryLinear(Int8Linear):
    """1-bit codes b (bit-packed, little-endian along the input) with a scale and min per row or
    group, w = scale * b + min, on 8-bit activations. Decoding: the lookup-table GEMV. Prefill: the
    bit-expanding GEMM, or on AVX-512 VNNI kernels the affine kernel's 1-bit tiles (vpdpbusd on
    the bits unpacked in registers: faster there, no faster on AVX2; see docs/decode-speed.md)."""

    _transient = ("_codes", "_dense", "ptrs_t", "ptrs_lut", "ptrs_units")

    def __init__(self, bits: np.ndarray, scale: np.ndarray, mins: np.ndarray, in_features: int,
                 bias: np.ndarray | None = None):
        rows, groups = scale.shape
        self.out_features, self.in_features = rows, in_features
        self.padded, self.kgroup, self.kernel_ok = _padding(in_features, groups)
        width = round_up(self.padded, 8) // 8
        packed = np.zeros((rows, width), np.uint8)
        packed[:, :min(width, bits.shape[1])] = bits[:, :width]
        if in_features % 8:  # clear bits past the real width in the last byte
            packed[:, in_features // 8] &= np.uint8((1 << (in_features % 8)) - 1)
        self.bits = packed
        self.scale, self.mins = _fp16_exact(scale), _fp16_exact(mins)  # as stored; every kernel reads these
        self.bias = None if bias is None else as_f32(bias)
        self._dense: np.ndarray | None = None
        self.units: np.ndarray | None = None  # the affine kernel's 1-bit layout (AVX-512 prefill)
        self._layouts()

    @classmethod
    def from_codes(cls, codes: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None = None) -> "BinaryLinear":
        """XTC's binary weights alpha * sign: codes -1/+1, alpha per row or group (scale 2 alpha, min -alpha)."""
        alpha = as_f32(alpha)
        return cls.from_affine((codes > 0).astype(np.uint8), 2 * alpha, -alpha, bias)

    @classmethod
    def from_affine(cls, codes: np.ndarray, scale: np.ndarray, mins: np.ndarray,
                    bias: np.ndarray | None = None) -> "BinaryLinear":
        """Codes 0/1 (rows, cols) with scale and min (rows, groups)."""
        bits = np.packbits(codes.astype(bool), axis=1, bitorder="little")
        return cls(bits, scale, mins, codes.shape[1], bias)

    def _layouts(self) -> None:
        # The matrix kernel wants scales and mins as (groups, rows rounded up to 32).
        rows, groups = self.scale.shape
        self.rows8, self.rows32 = round_up(rows, 8), round_up(rows, 32)
        self.scale_t = np.zeros((groups, self.rows32), np.float32)
        self.scale_t[:, :rows] = self.scale.T
        self.min_t = np.zeros((groups, self.rows32), np.float32)
        self.min_t[:, :rows] = self.mins.T
        # Decoding kernel layout: per block of 32 rows and 4 columns, 16 bytes holding row i's
        # 4 bits (low nibble) and row 16 + i's (high nibble).
        steps = self.padded // 4
        nibbles = np.zeros((self.rows32, steps), np.uint8)
        nibbles[:rows, 0::2] = self.bits & 0x0F
        nibbles[:rows, 1::2] = self.bits >> 4
        blocks = nibbles.reshape(-1, 32, steps)
        self.lut_bits = np.ascontiguousarray((blocks[:, :16] | (blocks[:, 16:] << 4)).transpose(0, 2, 1))
        self._bind()

    def _bind(self) -> None:
        self.ptrs_t = (self.bits.ctypes.data, self.scale_t.ctypes.data, self.min_t.ctypes.data, _ptr(self.bias))
        self.ptrs_lut = (self.lut_bits.ctypes.data, self.scale_t.ctypes.data, self.min_t.ctypes.data, self.rows32,
                         _ptr(self.bias))
        if self.units is not None:
            self.ptrs_units = (self.units.ctypes.data, self.sm.ctypes.data, _ptr(self.bias))

    def prepare(self, rt: "Kernels") -> None:
        if rt.vnni and self.units is None and self.kernel_ok:
            self.units = affine_layout(self.codes(), 1)
            self.sm = scale_min_layout(self.scale, self.mins)
            self._bind()

    def codes(self) -> np.ndarray:
        """The 0/1 codes (rows, in_features)."""
        return np.unpackbits(self.bits, axis=1, bitorder="little")[:, :self.in_features]

    def dense(self) -> np.ndarray:
        """The dequantised fp32 weights (the numpy fallback; built on first use)."""
        if self._dense is None:
            self._dense = dequantize_affine(self.codes(), self.scale, self.mins)
        return self._dense

    def run(self, rt: "Kernels", m: int, work: "Work", y: int, ldy: int, beta: int) -> None:
        head = (m, self.out_features, self.padded, self.kgroup, work.q, work.sx, work.qsum)
        if m <= rt.gemv_rows:
            rt.lib.xtc_gemv_lut(*head, *self.ptrs_lut, y, ldy, beta, rt.tables(m * self.padded * 8))
        elif rt.vnni and self.units is not None:
            rt.lib.xtc_affine(1, *head, *self.ptrs_units, y, ldy, beta, rt.block_rows)
        else:
            rt.lib.xtc_gemm_b1(*head, *self.ptrs_t, y, ldy, beta, rt.scratch(self.rows8 * self.padded), rt.block_rows)

    @staticmethod
    def concat(parts: list["BinaryLinear"]) -> "BinaryLinear":
        return BinaryLinear(np.concatenate([p.bits for p in parts]), np.concatenate([p.scale for p in parts]),
                            np.concatenate([p.mins for p in parts]), parts[0].in_features, _concat_bias(parts))


class AffineLinear(Int8Linear):
    """2-, 3- or 4-bit codes q with a scale and min per row or group, w = scale * q + min, on 8-bit
    activations (k-bit GEMM for prefill, GEMV for decoding: `xtc_affine`)."""

    _transient = ("_codes", "_dense", "ptrs")

    def __init__(self, codes: np.ndarray, bits: int, scale: np.ndarray, mins: np.ndarray,
                 bias: np.ndarray | None = None, *, layout: np.ndarray | None = None):
        """`layout`: the codes already in the kernels' layout (`codes` is then only read for its shape)."""
        if bits not in (2, 3, 4):
            raise ValueError(f"AffineLinear runs 2-, 3- and 4-bit codes, not {bits}")
        rows, cols = codes.shape
        self.bits, self.out_features, self.in_features = bits, rows, cols
        self.padded, self.kgroup, self.kernel_ok = _padding(cols, scale.shape[1])
        self.scale, self.mins = _fp16_exact(scale), _fp16_exact(mins)  # what the kernels read
        self.bias = None if bias is None else as_f32(bias)
        self.weights = affine_layout(codes, bits) if layout is None else layout
        self.sm = scale_min_layout(self.scale, self.mins)
        self._dense: np.ndarray | None = None
        self._bind()

    def _bind(self) -> None:
        self.ptrs = (self.weights.ctypes.data, self.sm.ctypes.data, _ptr(self.bias))

    def codes(self) -> np.ndarray:
        return affine_codes(self.weights, self.bits, self.out_features, self.in_features)

    def dense(self) -> np.ndarray:
        if self._dense is None:
            self._dense = dequantize_affine(self.codes(), self.scale, self.mins)
        return self._dense

    def run(self, rt: "Kernels", m: int, work: "Work", y: int, ldy: int, beta: int) -> None:
        rt.lib.xtc_affine(self.bits, m, self.out_features, self.padded, self.kgroup, work.q, work.sx, work.qsum,
                          *self.ptrs, y, ldy, beta, rt.block_rows)

    @staticmethod
    def concat(parts: list["AffineLinear"]) -> "AffineLinear":
        scale, mins = np.concatenate([p.scale for p in parts]), np.concatenate([p.mins for p in parts])
        if all(p.out_features % 16 == 0 for p in parts):  # whole row blocks: join the layouts as they are
            shape = np.empty((sum(p.out_features for p in parts), parts[0].in_features), np.uint8)
            return AffineLinear(shape, parts[0].bits, scale, mins, _concat_bias(parts),
                                layout=np.concatenate([p.weights for p in parts]))
        return AffineLinear(np.concatenate([p.codes() for p in parts]), parts[0].bits, scale, mins, _concat_bias(parts))


def quantized_linear(codes: np.ndarray, bits: int, scale: np.ndarray, mins: np.ndarray, bias: np.ndarray | None,
                     act_bits: int | None) -> DenseLinear | BinaryLinear | AffineLinear:
    """The linear class that runs codes of `bits` bits (scale * q + min) fastest: the integer
    kernels for 1..4-bit codes on 8-bit activations, else fp32 on the dequantised weights."""
    if act_bits == 8 and bits == 1:
        return BinaryLinear.from_affine(codes, scale, mins, bias)
    if act_bits == 8 and bits in (2, 3, 4):
        return AffineLinear(codes, bits, scale, mins, bias)
    return DenseLinear(dequantize_affine(codes, scale, mins), bias, act_bits)


def fuse(parts: list):
    """One linear computing `parts` side by side (q, k, v; gate, up), fused where the kinds agree."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    same = all(type(p) is type(first) for p in parts) and len({p.in_features for p in parts}) == 1
    if same and isinstance(first, BinaryLinear) and len({p.scale.shape[1] for p in parts}) == 1:
        return BinaryLinear.concat(parts)
    if same and isinstance(first, AffineLinear) and len({(p.bits, p.scale.shape[1]) for p in parts}) == 1:
        return AffineLinear.concat(parts)
    if same and isinstance(first, DenseLinear) and len({p.act_bits for p in parts}) == 1:
        return DenseLinear.concat(parts)
    return Split(parts)


class Split:
    """Linears that cannot be fused (mixed kinds or formats): run each, concatenate the outputs.
    Integer linears sharing one activation quantisation (same padded width and group) also run
    as one step of a fused block, each writing its columns of the output."""

    def __init__(self, parts):
        self.parts = parts
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)
        shared = all(isinstance(p, Int8Linear) and p.kernel_ok for p in parts)
        shared = shared and len({(p.padded, p.kgroup) for p in parts}) == 1
        self.kernel_ok = shared
        if shared:
            self.padded, self.kgroup, self.groups = parts[0].padded, parts[0].kgroup, parts[0].groups

    def __call__(self, x, rt=None):
        return np.concatenate([p(x, rt) for p in self.parts], axis=-1)

    def prepare(self, rt: "Kernels") -> None:
        for p in self.parts:
            p.prepare(rt)

    def run(self, rt: "Kernels", m: int, work: "Work", y: int, ldy: int, beta: int) -> None:
        col = 0
        for p in self.parts:
            p.run(rt, m, work, y + 4 * col, ldy, beta)
            col += p.out_features


class Work:
    """Buffers for quantised activations (and a fused block's intermediates), with raw addresses."""

    def __init__(self, rows: int, width: int, groups: int, block: "Block | None" = None, heads_width: int = 0):
        self.arrays = [np.empty((rows, width), np.int8), np.empty(rows, np.float32),
                       np.empty((rows, groups), np.int32)]
        self.q, self.sx, self.qsum = (a.ctypes.data for a in self.arrays)
        if block is not None:
            for name, cols in (("qkv", block.qkv.out_features), ("att", heads_width), ("gu", block.up.out_features)):
                arr = np.empty((rows, cols), np.float32)
                self.arrays.append(arr)
                setattr(self, name, arr.ctypes.data)


# -- embedding tables ---------------------------------------------------------------------------
class Table(Addressed):
    """An embedding table that doubles as the output head: fp32 (`weight`), or integer codes with a
    scale and min per row or group (`Table.quantized`), kept as
    - 4 bits per code (codes < 16, widths and groups in whole chunks of 32): `xtc_gemv_u4f`;
    - else int8 codes c = q - 128 with the min shifted by 128 scales (dropped when zero, as for
      symmetric 8-bit tables): `xtc_gemv_i8f`."""

    _transient = ("_dense", "_codes4")

    def __init__(self, weight: np.ndarray):
        self.weight: np.ndarray | None = as_f32(weight)
        self.rows, self.dim = self.weight.shape
        self.group = self.dim
        self.packed4 = self.sm = self.codes = self.scale = self.mins = None
        self._dense: np.ndarray | None = None
        self._codes4: np.ndarray | None = None  # the 4-bit codes unpacked, for the numpy path

    @classmethod
    def quantized(cls, codes: np.ndarray, bits: int, scale: np.ndarray, mins: np.ndarray) -> "Table":
        table = cls.__new__(cls)
        table.weight, table._dense, table._codes4 = None, None, None
        table.packed4 = table.sm = table.codes = table.scale = table.mins = None
        table.rows, table.dim = codes.shape
        table.group = table.dim // scale.shape[1]
        if bits <= 4 and table.dim % 32 == 0 and table.group % 32 == 0:
            table.packed4 = head4_layout(codes)
            pairs = np.stack([np.asarray(scale, np.float32), np.asarray(mins, np.float32)], axis=-1)
            table.sm = np.ascontiguousarray(pairs.astype(np.float16)).view(np.uint16)  # (rows, groups, 2): the only copy
        else:
            table.scale = as_f32(scale)
            table.codes = (codes.astype(np.int16) - 128).astype(np.int8)
            shifted = as_f32(mins) + 128 * table.scale
            table.mins = None if not shifted.any() else as_f32(shifted)
        return table

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` dequantised (fp32)."""
        if self.weight is not None:
            return self.weight[ids]
        if self.packed4 is not None:
            pairs = self.sm[ids].view(np.float16).astype(np.float32)
            return dequantize_affine(head4_codes(self.packed4[ids]), pairs[..., 0], pairs[..., 1])
        n = len(ids)
        scale, codes = self.scale[ids], self.codes[ids].astype(np.float32).reshape(n, -1, self.group)
        out = codes * scale[..., None]
        if self.mins is not None:
            out += self.mins[ids][..., None]
        return out.reshape(n, self.dim)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        return self._rows(np.asarray(ids))

    def dense(self) -> np.ndarray:
        if self.weight is not None:
            return self.weight
        if self._dense is None:
            self._dense = self._rows(np.arange(self.rows))
        return self._dense

    def project(self, x: np.ndarray, rt: "Kernels") -> np.ndarray:
        """x @ table^T: the output head."""
        lib = rt.lib
        if lib is not None:
            x = np.ascontiguousarray(x, dtype=np.float32)
            m, k = x.shape
            y = np.empty((m, self.rows), np.float32)
            if self.weight is not None:
                lib.xtc_gemv_f32rows(m, self.rows, k, x.ctypes.data, k, self.weight.ctypes.data, y.ctypes.data, self.rows)
                return y
            if self.packed4 is not None:
                lib.xtc_gemv_u4f(m, self.rows, k, self.group, x.ctypes.data, k, self.packed4.ctypes.data,
                                 self.sm.ctypes.data, y.ctypes.data, self.rows)
                return y
            if self.dim % 8 == 0 and self.group % 8 == 0:
                lib.xtc_gemv_i8f(m, self.rows, k, self.group, x.ctypes.data, k, self.codes.ctypes.data,
                                 self.scale.ctypes.data, _ptr(self.mins), y.ctypes.data, self.rows)
                return y
        elif self.weight is not None:
            return exact.head_f32(x, self.weight)
        elif self.packed4 is not None:
            if self._codes4 is None:
                self._codes4 = head4_codes(self.packed4)
            pairs = self.sm.view(np.float16).astype(np.float32)
            return exact.head_u4(x, self._codes4, pairs[..., 0], pairs[..., 1])
        elif self.dim % 8 == 0 and self.group % 8 == 0:
            return exact.head_i8(x, self.codes, self.scale, self.mins)
        return x @ self.dense().T  # what the kernels do too for such tables


# -- the model ------------------------------------------------------------------------------------
@dataclass
class Norm(Addressed):
    weight: np.ndarray
    bias: np.ndarray | None
    eps: float
    rms: bool
    _transient = ("ptrs",)

    def __post_init__(self) -> None:
        self.weight = as_f32(self.weight)
        self.bias = None if self.bias is None else as_f32(self.bias)
        self._bind()

    def _bind(self) -> None:
        self.ptrs = (self.weight.ctypes.data, _ptr(self.bias))

    def __call__(self, x: np.ndarray, rt: "Kernels") -> np.ndarray:
        m, k = x.shape
        if rt.lib is not None:
            out = np.empty_like(x)
            rt.lib.xtc_norm(x.ctypes.data, m, k, k, *self.ptrs, self.eps, int(self.rms), out.ctypes.data, k)
            return out
        return exact.norm(x, self.weight, self.bias, self.eps, self.rms)


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
