"""The in-memory bit layouts the kernels read (`xtc.infer.kernels`), built from plain codes at load
time, and their inverses (for the numpy path and the tests). The on-disk layout is the packed
format's (`xtc.core.format`); these are the kernels' (see the comments at the top of each .cpp file)."""

from __future__ import annotations

import numpy as np


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# The affine kernels' weight layout (xtc/infer/kernels/affine.cpp): rows in blocks of 16, inputs
# in chunks of 32 (8 steps of 4); a chunk of a block is 64-byte units, in each unit row i owns
# bytes 4i..4i+3 and bit field f of unit u holds step u * (8 / width) + f. 3-bit codes: two units
# of their low 2 bits, then one unit of their high bit.
def _to_units(q: np.ndarray, width: int) -> np.ndarray:
    """(blocks, chunks, 8 steps, 16 rows, 4) codes < 2**width -> (blocks, chunks, units, 64) bytes."""
    per_unit = 8 // width
    b, c = q.shape[:2]
    # On a contiguous copy: faster than on the strided view (docs/decode-speed.md, "Model ready").
    fields = np.ascontiguousarray(q).reshape(b, c, 8 // per_unit, per_unit, 64)
    out = fields[:, :, :, 0].copy()
    for f in range(1, per_unit):
        out |= fields[:, :, :, f] << np.uint8(width * f)
    return out.reshape(b, c, -1, 64)


def _from_units(units: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `_to_units`."""
    per_unit = 8 // width
    b, c, n = units.shape[:3]
    shifts = (np.arange(per_unit, dtype=np.uint8) * width)[:, None, None]
    fields = (units.reshape(b, c, n, 1, 16, 4) >> shifts) & np.uint8((1 << width) - 1)
    return fields.reshape(b, c, n * per_unit, 16, 4)


def affine_layout(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (rows, cols) -> (blocks, chunks, 64 * bits) bytes; rows padded to 16, cols to 32."""
    rows, cols = codes.shape
    q = np.zeros((round_up(rows, 16), round_up(cols, 32)), np.uint8)
    q[:rows, :cols] = codes
    q = q.reshape(q.shape[0] // 16, 16, q.shape[1] // 32, 8, 4).transpose(0, 2, 3, 1, 4)
    if bits == 3:
        out = np.concatenate([_to_units(q & 3, 2), _to_units(q >> 2, 1)], axis=2)
    else:
        out = _to_units(q, bits)
    return np.ascontiguousarray(out.reshape(out.shape[0], out.shape[1], -1))


def affine_codes(layout: np.ndarray, bits: int, rows: int, cols: int) -> np.ndarray:
    """Inverse of `affine_layout`: codes (rows, cols)."""
    b, c = layout.shape[:2]
    units = layout.reshape(b, c, -1, 64)
    q = _from_units(units[:, :, :2], 2) | (_from_units(units[:, :, 2:], 1) << np.uint8(2)) if bits == 3 \
        else _from_units(units, bits)
    return np.ascontiguousarray(q.transpose(0, 3, 1, 2, 4).reshape(b * 16, c * 32)[:rows, :cols])


def scale_min_layout(scale: np.ndarray, mins: np.ndarray, block: int = 16) -> np.ndarray:
    """(rows, groups) fp16 scales and mins -> (row blocks, groups, 2 * block) as uint16 (fp16 bits):
    per block and group, `block` scales then `block` mins."""
    rows, groups = scale.shape
    padded = round_up(rows, block)
    both = np.zeros((2, padded, groups), np.float16)
    both[0, :rows], both[1, :rows] = scale, mins
    out = both.reshape(2, padded // block, block, groups).transpose(1, 3, 0, 2)
    return np.ascontiguousarray(out.reshape(padded // block, groups, 2 * block)).view(np.uint16)


# -- the head's 4-bit table ----------------------------------------------------------------------
def head4_layout(codes: np.ndarray) -> np.ndarray:
    """4-bit table codes (rows, dim), dim % 32 == 0 -> (rows, dim / 2) bytes: per chunk of 32,
    byte i = q[i] | q[16 + i] << 4 (xtc_gemv_u4f unpacks 16 codes with one mask or shift)."""
    rows, dim = codes.shape
    q = codes.reshape(rows, dim // 32, 2, 16)
    return np.ascontiguousarray((q[:, :, 0] | (q[:, :, 1] << np.uint8(4))).reshape(rows, dim // 2))


def head4_codes(layout: np.ndarray) -> np.ndarray:
    rows, half = layout.shape
    b = layout.reshape(rows, half // 16, 16)
    return np.stack([b & np.uint8(15), b >> np.uint8(4)], axis=2).reshape(rows, 2 * half)
