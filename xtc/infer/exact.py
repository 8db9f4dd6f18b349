"""The numpy path of the runtime, rounding exactly as the compiled kernels do (`xtc.infer.kernels`).

Greedy decoding turns one ulp into another suggestion, so the numpy fallback repeats the kernels'
arithmetic operation for operation instead of calling BLAS in its own order: integer sums per
group (exact in any order), then the kernels' fp32 epilogue in their order; fp32 dot products and
sums as the kernels' 8-lane accumulators, combined with the kernels' `hsum_ps` tree; fused
multiply-adds rounded once (`fma32`); exp as the kernels' `exp256` polynomial. Each function
names the kernel it mirrors. fp32 linears (`DenseLinear`) are not mirrored: they use BLAS and
match the kernels within float rounding.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
_ONE = F32(1.0)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def fma32(a, b, c) -> np.ndarray:
    """fp32 a * b + c rounded once (vfmadd). The product is exact in float64; the sum is rounded
    to odd there (TwoSum gives its error), after which rounding to fp32 is correct."""
    p = f32(a).astype(np.float64) * f32(b)
    c = f32(c).astype(np.float64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    bits = s.view(np.int64)
    fix = (err != 0) & ((bits & 1) == 0)
    if fix.any():
        bits = bits.copy()
        toward = np.where((err > 0) == (s > 0), 1, -1)
        bits[fix] += toward[fix]
        s = bits.view(np.float64)
    return s.astype(np.float32)


def hsum8(v: np.ndarray) -> np.ndarray:
    """The kernels' hsum_ps over the last axis (8 lanes): ((0+4)+(2+6)) + ((1+5)+(3+7))."""
    s4 = v[..., :4] + v[..., 4:]
    s2 = s4[..., :2] + s4[..., 2:]
    return s2[..., 0] + s2[..., 1]


def seqsum(v: np.ndarray, axis: int = -1, zero: bool = True) -> np.ndarray:
    """Left-to-right fp32 sum along `axis`, from +0 (`float s = 0.0f; s += ...`) unless not `zero`
    (the first element starts it): a loop's order (cumsum never pairs)."""
    v = np.moveaxis(f32(v), axis, -1)
    if zero:
        v = np.concatenate([np.zeros((*v.shape[:-1], 1), np.float32), v], axis=-1)
    return np.cumsum(v, axis=-1, dtype=np.float32)[..., -1]


def lanes(v: np.ndarray) -> np.ndarray:
    """(..., K) with K % 8 == 0 -> (..., K / 8, 8): the 8-lane chunks a 256-bit loop reads."""
    return v.reshape(*v.shape[:-1], -1, 8)


_EXP = [F32(c) for c in (1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2, 1.6666665459E-1,
                         5.0000001201E-1)]


def exp256(x) -> np.ndarray:
    """The kernels' exp256 (common.h): Cephes polynomial, inputs clamped to +-88.376."""
    x = np.maximum(np.minimum(f32(x), F32(88.3762626647949)), F32(-88.3762626647949))
    fx = np.floor(fma32(x, F32(1.44269504088896341), F32(0.5)))
    x = fma32(-fx, F32(0.693359375), x)
    x = fma32(-fx, F32(-2.12194440e-4), x)
    y = np.full_like(x, _EXP[0])
    for c in _EXP[1:]:
        y = fma32(y, x, c)
    y = fma32(y, x * x, x + _ONE)
    e = ((fx.astype(np.int32) + 127) << 23).view(np.float32)
    return y * e


# -- row-wise kernels (elementwise.cpp) ----------------------------------------------------------
def norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float, rms: bool) -> np.ndarray:
    """norm_row: RMSNorm or LayerNorm per row, sums in 8 lanes then hsum, the tail added in order."""
    x = f32(x)
    K = x.shape[-1]
    body = K // 8 * 8
    mean = np.zeros(x.shape[:-1], np.float32)
    if not rms:
        s = hsum8(seqsum(lanes(x[..., :body]), axis=-2)) if body else np.zeros(x.shape[:-1], np.float32)
        s = seqsum(np.concatenate([s[..., None], x[..., body:]], axis=-1), zero=False)
        mean = s / F32(K)
    d = x - mean[..., None]
    acc = np.zeros((*x.shape[:-1], 8), np.float32)
    for c in range(body // 8):
        dc = d[..., 8 * c:8 * c + 8]
        acc = fma32(dc, dc, acc)
    ss = seqsum(np.concatenate([hsum8(acc)[..., None], d[..., body:] * d[..., body:]], axis=-1), zero=False)
    r = (_ONE / np.sqrt(ss / F32(K) + F32(eps)))[..., None]
    if rms:
        return f32(weight) * (x * r)
    return (d * r) * f32(weight) + (f32(bias) if bias is not None else F32(0.0))


def silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu_mul8: (g / (1 + exp(0 - g))) as g * (1 / (1 + exp(-g))), times up."""
    gate = f32(gate)
    sig = _ONE / (_ONE + exp256(F32(0.0) - gate))
    return (gate * sig) * f32(up)


def gelu_tanh(v: np.ndarray) -> np.ndarray:
    """gelu8: 0.5 v (1 + tanh(u)), tanh(u) = 1 - 2 / (exp(2u) + 1)."""
    v = f32(v)
    c = ((F32(0.044715) * v) * v) * v
    u = F32(0.7978845608028654) * (v + c)
    t = _ONE - F32(2.0) / (exp256(u + u) + _ONE)
    return (F32(0.5) * v) * (_ONE + t)


# -- integer linears (affine.cpp, binary.cpp) ----------------------------------------------------
def int8_linear(q: np.ndarray, sx: np.ndarray, codes: np.ndarray, levels: int, scale: np.ndarray, mins: np.ndarray,
                bias: np.ndarray | None) -> np.ndarray:
    """xtc_affine / xtc_gemm_b1 / xtc_gemv_lut: activation codes q (m, K) with scales sx (m, 1),
    weight codes (N, K) < levels, fp16-exact scale and min (N, G). Per group g the integer sums
    T = q . codes and X = sum q are exact (fp32 BLAS on integers stays exact below 2^24; float64
    past it); then F = fma(scale, T, fma(min, X, F)) group by group, y = F * sx + bias."""
    m, K = q.shape
    N, G = scale.shape
    gl = K // G
    exact32 = gl * 127 * (levels - 1) < 2 ** 24
    dtype = np.float32 if exact32 else np.float64
    qg = q.reshape(m, G, gl).astype(dtype)
    cg = codes.reshape(N, G, gl).astype(dtype)
    F = np.zeros((m, N), np.float32)
    for g in range(G):
        T = (qg[:, g] @ cg[:, g].T).astype(np.float32)
        X = qg[:, g].sum(-1).astype(np.float32)[:, None]
        F = fma32(scale[None, :, g], T, fma32(mins[None, :, g], X, F))
    y = F * f32(sx).reshape(m, 1)
    return y + bias if bias is not None else y


# -- the output head (head.cpp) --------------------------------------------------------------------
def _group_sums(x: np.ndarray, G: int) -> np.ndarray:
    m, K = x.shape
    return seqsum(x.reshape(m, G, K // G), axis=-1)  # (m, G): a scalar loop per group


def head_f32(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """xtc_gemv_f32rows: two 8-lane accumulators per 16 columns, hsum of their sum, tail in order."""
    x, weight = f32(x), f32(weight)
    K = x.shape[1]
    body = K // 16 * 16
    a0 = np.zeros((x.shape[0], weight.shape[0], 8), np.float32)
    a1 = a0.copy()
    for k in range(0, body, 16):
        a0 = fma32(weight[None, :, k:k + 8], x[:, None, k:k + 8], a0)
        a1 = fma32(weight[None, :, k + 8:k + 16], x[:, None, k + 8:k + 16], a1)
    s = hsum8(a0 + a1)
    if body < K:
        tail = weight[None, :, body:] * x[:, None, body:]
        s = seqsum(np.concatenate([s[..., None], tail], axis=-1), zero=False)
    return s


def _head_affine(x: np.ndarray, G: int, parts, scale: np.ndarray, mins: np.ndarray | None) -> np.ndarray:
    """The common tail of i8_rows / u4_rows: per group the two partial vectors (from `parts(g)`)
    are added and scaled into `total` (fma), the min terms summed in order; hsum(total) + offset."""
    m = x.shape[0]
    N = scale.shape[0]
    total = np.zeros((m, N, 8), np.float32)
    for g in range(G):
        p0, p1 = parts(g)
        total = fma32(p0 + p1, scale[None, :, g, None], total)
    out = hsum8(total)
    if mins is None:
        return out + F32(0.0)
    xs = _group_sums(x, G)
    return out + seqsum(mins[None] * xs[:, None, :])  # (m, N, G) min terms, in order


def head_i8(x: np.ndarray, codes: np.ndarray, scale: np.ndarray, mins: np.ndarray | None) -> np.ndarray:
    """xtc_gemv_i8f / i8_rows: int8 codes, per group two accumulators taking 8-code steps in turn."""
    x = f32(x)
    N, K = codes.shape
    G = scale.shape[1]
    gl = K // G
    c, m = codes, x.shape[0]

    def parts(g):
        part = [np.zeros((m, N, 8), np.float32), np.zeros((m, N, 8), np.float32)]
        for i, k in enumerate(range(g * gl, (g + 1) * gl, 8)):
            part[i % 2] = fma32(c[None, :, k:k + 8], x[:, None, k:k + 8], part[i % 2])
        return part

    return _head_affine(x, G, parts, f32(scale), None if mins is None else f32(mins))


def head_u4(x: np.ndarray, codes: np.ndarray, scale: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """xtc_gemv_u4f / u4_rows: per chunk of 32, codes 0-15 into accumulator 0 (8 lanes, two steps),
    codes 16-31 into accumulator 1."""
    x = f32(x)
    N, K = codes.shape
    G = scale.shape[1]
    cpg = K // G // 32
    c, m = codes, x.shape[0]

    def parts(g):
        part = [np.zeros((m, N, 8), np.float32), np.zeros((m, N, 8), np.float32)]
        for ch in range(g * cpg, (g + 1) * cpg):
            for half in (0, 1):
                for step in (0, 8):
                    k = 32 * ch + 16 * half + step
                    part[half] = fma32(c[None, :, k:k + 8], x[:, None, k:k + 8], part[half])
        return part

    return _head_affine(x, G, parts, f32(scale), f32(mins))


# -- attention (attention.cpp) ---------------------------------------------------------------------
def softmax_rows(s: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """softmax_row: numerators exp(s - max) for keys j < len (0 past it), and 1 / their sum, the sum
    taken in 8 lanes (chunks in order) then hsum. s: (..., L); lens broadcast against s[..., 0]."""
    L = s.shape[-1]
    valid = np.arange(L) < lens[..., None]
    mx = np.where(valid, s, -np.inf).max(-1, keepdims=True)
    e = np.where(valid, exp256(np.where(valid, s - mx, F32(0.0))), F32(0.0)).astype(np.float32)
    L8 = -(-L // 8) * 8
    e8 = np.concatenate([e, np.zeros((*e.shape[:-1], L8 - L), np.float32)], axis=-1)
    return e, _ONE / hsum8(seqsum(lanes(e8), axis=-2))  # vsum starts at 0


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, start: int, scale: float) -> np.ndarray:
    """xtc_attention for n queries at positions start.. over the cache: q (n, H, hd), keys in
    panels (KV, cap/16, hd, 16), values (KV, cap, hd). Scores: one fma chain over d per key;
    weights times values: one fma chain over keys per output (keys past a row's own are 0 there,
    adding nothing). hd % 8 != 0 takes the kernels' scalar path: products summed in order."""
    n, H, hd = q.shape
    KV = keys.shape[0]
    group, end = H // KV, start + n
    kt = keys.transpose(0, 2, 1, 3).reshape(KV, hd, -1)[:, :, :end]  # (KV, hd, end)
    v = values[:, :end]  # (KV, end, hd)
    qh = f32(q).reshape(n, KV, group, hd).transpose(1, 0, 2, 3).reshape(KV, n * group, hd)  # rows (query, head)
    lens = np.repeat(start + np.arange(n) + 1, group)  # (rows,)
    vector = hd % 8 == 0
    if vector:
        acc = np.zeros((KV, n * group, end), np.float32)
        for d in range(hd):
            acc = fma32(qh[:, :, d, None], kt[:, None, d, :], acc)
    else:
        acc = seqsum(qh[:, :, None, :] * kt.transpose(0, 2, 1)[:, None], axis=-1)
    p, inv = softmax_rows(acc * F32(scale), lens)
    if vector:
        out = np.zeros((KV, n * group, hd), np.float32)
        for j in range(end):
            out = fma32(p[:, :, j, None], v[:, None, j, :], out)
    else:
        out = seqsum(p[:, :, :, None] * v[:, None], axis=-2)
    out = out * inv[..., None]
    return out.reshape(KV, n, group, hd).transpose(1, 0, 2, 3).reshape(n, H * hd)
