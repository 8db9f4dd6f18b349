"""The compiled kernels (xtc/infer/kernels/): every variant builds with warnings as errors, the best
one the CPU runs is chosen (or the one XTC_KERNELS forces) and reported, a fallback to numpy is
logged with its reason, the sources ship in the wheel, and every weight format's kernels equal a
float64 reference of the packed format's formula on each instruction set:

    y[t, r] = sx[t] * sum_g (scale[r, g] * sum_{j in g} q[r, j] * xq[t, j] + min[r, g] * sum_{j in g} xq[t, j]) + bias[r]

Weights are written directly with numpy (random codes, scales and mins; whole models: the tiny test
model's weights rounded to the nearest code), independent of the training side.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from xtc.core import format
from xtc.infer import exact, kernels
from xtc.infer.layers import AffineLinear, BinaryLinear, DenseLinear, Kernels, Split, Table, quantize_rows
from xtc.infer.layouts import affine_codes, affine_layout, head4_codes, head4_layout, scale_min_layout
from xtc.infer.runtime import Runtime, load_runtime

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [pytest.param(v, marks=pytest.mark.skipif(not kernels.supported(v), reason=f"this CPU cannot run {v}"))
            for v in kernels.VARIANTS]
AVX2_FLAGS = frozenset({"avx2", "fma", "f16c"})
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty library cache, as on a machine that never built the kernels."""
    monkeypatch.setattr(kernels, "_libs", {})
    monkeypatch.setattr(kernels, "_errors", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(kernels.ENV, raising=False)


def context(variant: str) -> Kernels:
    lib = kernels.load(variant)
    assert lib is not None, kernels.error
    lib.xtc_set_threads(2)
    return Kernels(lib)


# -- building ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(kernels.VARIANTS))
def test_every_variant_builds_with_warnings_as_errors(variant, tmp_path):
    """Compiles whether or not this CPU could run the result; a broken build fails the test."""
    if kernels.compiler() is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    out = kernels.build(variant, tmp_path / f"{variant}.so", werror=True)
    symbols = subprocess.run(["nm", "-D", str(out)], capture_output=True, text=True).stdout if shutil.which("nm") else ""
    assert out.stat().st_size > 0
    assert not symbols or all(name in symbols for name in kernels.SIGNATURES)


def test_a_broken_source_is_a_build_error_not_a_skip(tmp_path, monkeypatch):
    if kernels.compiler() is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    broken = tmp_path / "src"  # the header and one file with a warning (quicker than every file)
    broken.mkdir()
    shutil.copy(kernels.SOURCE_DIR / "common.h", broken / "common.h")
    (broken / "broken.cpp").write_text('#include "common.h"\nAPI int f(void) { int unused; return 0; }\n')
    monkeypatch.setattr(kernels, "SOURCE_DIR", broken)
    with pytest.raises(kernels.BuildError, match="unused"):
        kernels.build("avx2", tmp_path / "lib.so", werror=True)


def test_the_cache_key_holds_the_variant_and_the_sources(tmp_path, monkeypatch):
    paths = {v: kernels.library_path(v) for v in kernels.VARIANTS}
    assert len(set(paths.values())) == len(paths) and all(v in p.name for v, p in paths.items())
    copy = tmp_path / "src"
    shutil.copytree(kernels.SOURCE_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(kernels, "SOURCE_DIR", copy)
    assert kernels.library_path("avx2") == paths["avx2"]
    (copy / "common.h").write_text((copy / "common.h").read_text() + "\n// changed\n")
    assert kernels.library_path("avx2") != paths["avx2"]


def test_the_sources_ship_in_the_wheel(tmp_path):
    """A non-editable install builds the kernels from the package's own copy of the sources."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["xtc"]
    shipped = [p for p in kernels.SOURCE_DIR.iterdir() if p.suffix in (".cpp", ".h")]
    assert shipped and all(any(fnmatch(str(p.relative_to(ROOT / "xtc")), g) for g in globs) for p in shipped)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("xtc", "lsp_server"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    code = f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path / 'dist')!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = zipfile.ZipFile(tmp_path / "dist" / proc.stdout.split()[-1]).namelist()
    assert {f"xtc/infer/kernels/{p.name}" for p in shipped} <= set(names)


# -- choosing and reporting a variant ---------------------------------------------------------------
def test_the_best_variant_the_cpu_runs_is_chosen():
    assert kernels.best_variant(AVX512_FLAGS) == "avx512-vnni"
    assert kernels.best_variant(AVX512_FLAGS - {"avx512_vnni"}) == "avx2"  # AVX-512 without VNNI: AVX2
    assert kernels.best_variant(AVX2_FLAGS) == "avx2"
    assert kernels.best_variant(frozenset({"sse4_2", "avx"})) is None
    assert kernels.best_variant() == next(v for v in kernels.BEST_FIRST if kernels.supported(v))


@pytest.mark.parametrize("value,want", [("avx2", "avx2"), ("AVX512", "avx512-vnni"), ("avx512-vnni", "avx512-vnni"),
                                        ("numpy", "numpy"), ("0", "numpy"), ("", None), ("auto", None)])
def test_the_environment_variable_forces_a_variant(monkeypatch, value, want):
    monkeypatch.setenv(kernels.ENV, value)
    assert kernels.requested() == want


def test_a_bad_environment_value_falls_back_with_a_logged_reason(fresh, monkeypatch, caplog):
    monkeypatch.setenv(kernels.ENV, "sse9")
    with caplog.at_level(logging.WARNING, logger="xtc"):
        assert kernels.load() is None
    assert "sse9" in kernels.error and "using numpy" in caplog.text and "sse9" in caplog.text


def test_a_variant_this_cpu_lacks_is_never_loaded(fresh, monkeypatch, caplog):
    monkeypatch.setattr(kernels, "cpu_flags", lambda: AVX2_FLAGS)
    with caplog.at_level(logging.WARNING, logger="xtc"):
        assert kernels.load("avx512-vnni") is None
    assert "avx512_vnni" in kernels.error and "avx512_vnni" in caplog.text


def test_no_compiler_falls_back_to_numpy_with_a_logged_reason(fresh, monkeypatch, caplog):
    monkeypatch.setattr(kernels, "cpu_flags", lambda: AVX2_FLAGS)
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with caplog.at_level(logging.WARNING, logger="xtc"):
        assert kernels.load() is None
    assert "no C++ compiler" in kernels.error and "no C++ compiler" in caplog.text


def test_a_cpu_without_avx2_falls_back_to_numpy_with_a_logged_reason(fresh, monkeypatch, caplog):
    monkeypatch.setattr(kernels, "cpu_flags", lambda: frozenset({"sse4_2"}))
    with caplog.at_level(logging.WARNING, logger="xtc"):
        assert kernels.load() is None
    assert "AVX2" in kernels.error and "AVX2" in caplog.text


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_runtime_reports_the_variant_it_runs(packed_dirs, monkeypatch, variant):
    monkeypatch.setenv(kernels.ENV, variant)
    rt = load_runtime(str(packed_dirs["llama", "int4"]))
    assert rt.kernels == variant and rt.kernels_error is None
    monkeypatch.setenv(kernels.ENV, "numpy")
    rt = load_runtime(str(packed_dirs["llama", "int4"]))
    assert rt.kernels == "numpy" and "numpy" in rt.kernels_error
    assert Runtime(None, spec=rt.spec, kernels=variant).kernels == variant


def test_bench_json_says_which_kernels_ran(packed_dirs, monkeypatch):
    from xtc.eval.speed import run_bench

    monkeypatch.delenv(kernels.ENV, raising=False)
    text = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x = 0\n" * 8
    r = run_bench(str(packed_dirs["gpt2", "mixed"]), prompt_text=text, prompt_tokens=32, new_tokens=3, repeats=1)
    assert r["kernels"] == kernels.name(kernels.load()) and json.dumps(r)


# -- numerics: each format against a float64 reference ----------------------------------------------
def reference(x: np.ndarray, codes: np.ndarray, scale: np.ndarray, mins: np.ndarray, bias: np.ndarray | None):
    """The packed format's formula in float64 on the int8 activation codes (quantised exactly as the
    kernels do), and the size of its terms (for a relative tolerance)."""
    q, sx = quantize_rows(x)
    q, sx = q.astype(np.float64), sx.astype(np.float64)
    rows, cols = codes.shape
    groups = scale.shape[1]
    qg, cg = q.reshape(len(q), groups, -1), codes.reshape(rows, groups, -1).astype(np.float64)
    dots, sums = np.einsum("tgj,rgj->trg", qg, cg), qg.sum(-1)[:, None, :]
    s, m = scale.astype(np.float64)[None], mins.astype(np.float64)[None]
    y = sx * (dots * s + sums * m).sum(-1)
    size = sx * (np.einsum("tgj,rgj->trg", np.abs(qg), cg) * np.abs(s) + np.abs(sums * m)).sum(-1)
    if bias is not None:
        y, size = y + bias, size + np.abs(bias)
    return y, size


def random_affine(rng, rows: int, cols: int, bits: int, group: int | None):
    groups = cols // (group or cols)
    codes = rng.integers(0, 2 ** bits, (rows, cols)).astype(np.uint8)
    scale = rng.uniform(0.005, 0.05, (rows, groups)).astype(np.float16)
    mins = rng.uniform(-0.4, 0.1, (rows, groups)).astype(np.float16)
    return codes, scale, mins


SHAPES = [(37, 64, None), (48, 128, 32), (100, 256, 64), (40, 384, 128), (33, 200, None), (16, 96, 32)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_quantised_linears_equal_the_formula(variant, bits):
    """Matrix-vector (1-4 tokens) and matrix (5+ tokens) paths, padded widths, rows not a multiple
    of the kernels' blocks, grouped and per-row scales, with a bias: exact integer sums, so the
    results match the float64 formula to ~1e-5 of the size of its terms."""
    ctx = context(variant)
    rng = np.random.default_rng(bits)
    for rows, cols, group in SHAPES:
        codes, scale, mins = random_affine(rng, rows, cols, bits, group)
        bias = rng.standard_normal(rows).astype(np.float32)
        lin = BinaryLinear.from_affine(codes, scale, mins, bias) if bits == 1 else AffineLinear(codes, bits, scale, mins, bias)
        assert lin.kernel_ok
        for tokens in (1, 2, 3, 4, 5, 70):
            x = (rng.standard_normal((tokens, cols)) * 3).astype(np.float32)
            want, size = reference(x, codes, scale, mins, bias)
            got = lin(x, ctx)
            assert np.all(np.abs(got - want) <= 1e-5 * size + 1e-6), (rows, cols, group, tokens)


def test_xtc_binary_codes_are_the_one_bit_case():
    """v1 binary layers (codes -1/+1, one alpha) are 1-bit codes with scale 2 alpha, min -alpha."""
    rng = np.random.default_rng(0)
    signs = np.where(rng.standard_normal((24, 64)) >= 0, 1, -1).astype(np.int8)
    alpha = rng.uniform(0.01, 0.1, (24, 2)).astype(np.float16).astype(np.float32)
    lin = BinaryLinear.from_codes(signs, alpha)
    dense = (signs.reshape(24, 2, 32) * alpha[..., None]).reshape(24, 64)
    np.testing.assert_array_equal(lin.dense(), dense)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp32_linears_equal_numpy(variant):
    ctx = context(variant)
    rng = np.random.default_rng(1)
    for rows, cols in ((37, 64), (100, 200), (16, 96)):
        w, bias = rng.standard_normal((rows, cols)).astype(np.float32), rng.standard_normal(rows).astype(np.float32)
        lin = DenseLinear(w, bias)
        lin.prepare(ctx)
        for tokens in (1, 5, 13, 100):
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            np.testing.assert_allclose(lin(x, ctx), x.astype(np.float64) @ w.T + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits,group", [(4, 32), (4, 64), (4, None), (2, 32), (8, None), (8, 32), (4, 16)])
def test_tables_as_the_head_equal_the_formula(variant, bits, group):
    """4-bit tables (and narrower codes) run the packed 4-bit head kernel, others the int8 one."""
    ctx = context(variant)
    rng = np.random.default_rng(bits)
    codes, scale, mins = random_affine(rng, 300, 96, bits, group)
    table = Table.quantized(codes, bits, scale, mins)
    assert (table.packed4 is not None) == (bits <= 4 and (group or 96) % 32 == 0)
    dense = (codes.reshape(300, scale.shape[1], -1) * scale.astype(np.float64)[..., None]
             + mins.astype(np.float64)[..., None]).reshape(300, 96)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    size = np.abs(x.astype(np.float64)) @ np.abs(dense).T
    got = table.project(x, ctx)
    assert np.all(np.abs(got - x.astype(np.float64) @ dense.T) <= 1e-5 * size + 1e-6)
    ids = np.array([0, 7, 299, 7])
    np.testing.assert_allclose(table.lookup(ids), dense[ids], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_the_kernel_layouts_round_trip(bits):
    rng = np.random.default_rng(bits)
    for rows, cols in ((37, 64), (16, 32), (5, 200)):
        codes = rng.integers(0, 2 ** bits, (rows, cols)).astype(np.uint8)
        layout = affine_layout(codes, bits)
        assert layout.shape == (-(-rows // 16), -(-cols // 32), 64 * bits)
        np.testing.assert_array_equal(affine_codes(layout, bits, rows, cols), codes)
    codes = rng.integers(0, 16, (9, 96)).astype(np.uint8)
    np.testing.assert_array_equal(head4_codes(head4_layout(codes)), codes)


@pytest.mark.parametrize("rows", [(32, 16, 48), (32, 20)])
def test_fused_affine_linears_hold_the_codes_scales_and_mins_of_their_parts_in_order(rows):
    rng = np.random.default_rng(len(rows))
    parts, codes = [], []
    for n in rows:
        c = rng.integers(0, 8, (n, 64)).astype(np.uint8)
        scale = rng.uniform(0.01, 0.02, (n, 2)).astype(np.float16)
        parts.append(AffineLinear(c, 3, scale, -scale, rng.standard_normal(n).astype(np.float32)))
        codes.append(c)
    fused = AffineLinear.concat(parts)
    np.testing.assert_array_equal(fused.weights, affine_layout(np.concatenate(codes), 3))
    np.testing.assert_array_equal(fused.codes(), np.concatenate(codes))
    np.testing.assert_array_equal(fused.sm, scale_min_layout(fused.scale, fused.mins))
    np.testing.assert_array_equal(fused.bias, np.concatenate([p.bias for p in parts]))
    assert fused.out_features == sum(rows)


# -- the numpy path rounds as the kernels do: the same logits on every CPU -----------------------------
def test_fma32_rounds_once():
    """Including sums whose float64 rounding lands on an fp32 midpoint (a naive a * b + c in
    float64 then rounds the wrong way)."""
    from fractions import Fraction

    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(3000).astype(np.float32) for _ in range(3))
    a[:2] = b[:2] = np.float32(1 + 2 ** -12)  # a * b = 1 + 2^-11 + 2^-24, a midpoint
    c[:2] = np.float32(2 ** -80), np.float32(-2 ** -80)
    got = exact.fma32(a, b, c)
    for i in range(len(a)):
        want = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        near = np.float32(float(want))
        options = (np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf)))
        best = min(options, key=lambda v: (abs(Fraction(float(v)) - want), int(v.view(np.int32)) & 1))
        assert got[i] == best, (i, a[i], b[i], c[i])
    assert got[0] == np.float32(1 + 2 ** -11 + 2 ** -23) and got[1] == np.float32(1 + 2 ** -11)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_quantised_linears_round_as_numpy(variant, bits):
    """Matrix-vector and matrix paths, every layout of SHAPES: the kernels' result is numpy's bit for bit."""
    ctx = context(variant)
    rng = np.random.default_rng(10 + bits)
    for rows, cols, group in SHAPES:
        codes, scale, mins = random_affine(rng, rows, cols, bits, group)
        bias = rng.standard_normal(rows).astype(np.float32)
        lin = BinaryLinear.from_affine(codes, scale, mins, bias) if bits == 1 else AffineLinear(codes, bits, scale, mins, bias)
        lin.prepare(ctx)
        for tokens in (1, 2, 4, 5, 70):
            x = (rng.standard_normal((tokens, cols)) * 3).astype(np.float32)
            np.testing.assert_array_equal(lin(x, ctx), lin(x, None), err_msg=str((rows, cols, group, tokens)))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits,group", [(4, 32), (4, 64), (4, None), (2, 32), (8, None), (8, 32), (4, 16), (32, None)])
def test_heads_round_as_numpy(variant, bits, group):
    """4-bit, int8 (with and without mins) and fp32 tables, one token and several."""
    ctx = context(variant)
    rng = np.random.default_rng(bits)
    if bits == 32:
        table = Table(rng.standard_normal((300, 88)).astype(np.float32))  # 88: a tail past 16-column steps
    else:
        codes, scale, mins = random_affine(rng, 300, 96, bits, group)
        if bits == 8 and group is None:  # symmetric int8 (codes - 128 times the scale): no min term
            mins = (-128 * scale.astype(np.float32)).astype(np.float16)
        table = Table.quantized(codes, bits, scale, mins)
        assert (table.mins is None) == (bits == 8 and group is None) or table.packed4 is not None
    for tokens in (1, 3):
        x = rng.standard_normal((tokens, table.dim)).astype(np.float32)
        np.testing.assert_array_equal(table.project(x, ctx), table.project(x, Kernels(None)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_row_kernels_round_as_numpy(variant):
    """Norms, SiLU x up and tanh GELU, widths with a tail past the 8-lane steps."""
    lib = context(variant).lib
    rng = np.random.default_rng(3)
    for width in (64, 70, 5):
        x = (rng.standard_normal((3, width)) * 2).astype(np.float32)
        w, b = rng.standard_normal(width).astype(np.float32), rng.standard_normal(width).astype(np.float32)
        for rms, bias in ((1, None), (0, b)):
            out = np.empty_like(x)
            lib.xtc_norm(x.ctypes.data, 3, width, width, w.ctypes.data, None if bias is None else bias.ctypes.data,
                         1e-5, rms, out.ctypes.data, width)
            np.testing.assert_array_equal(out, exact.norm(x, w, bias, 1e-5, bool(rms)))
        gu = (rng.standard_normal((3, 2 * width)) * 4).astype(np.float32)
        out = np.empty((3, width), np.float32)
        lib.xtc_silu_mul(gu.ctypes.data, 3, width, 2 * width, out.ctypes.data, width)
        np.testing.assert_array_equal(out, exact.silu_mul(gu[:, :width], gu[:, width:]))
        g = (rng.standard_normal(3 * width) * 4).astype(np.float32)
        want = exact.gelu_tanh(g)
        lib.xtc_gelu_tanh(g.ctypes.data, g.size)
        np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("hd", [64, 16, 12])
def test_attention_rounds_as_numpy(variant, hd):
    """Vector (hd % 8 == 0) and scalar paths, grouped kv heads, lengths with tails past 8 and 16 keys."""
    lib = context(variant).lib
    rng = np.random.default_rng(hd)
    H, KV, cap = 6, 2, 64
    keys = rng.standard_normal((KV, cap // 16, hd, 16)).astype(np.float32)
    values = rng.standard_normal((KV, cap, hd)).astype(np.float32)
    for start, n in ((0, 1), (0, 9), (5, 3), (37, 1), (40, 21)):
        q = (rng.standard_normal((n, H, hd)) * 2).astype(np.float32)
        out = np.empty((n, H * hd), np.float32)
        lib.xtc_attention(n, start, H, KV, hd, q.ctypes.data, H * hd, keys.ctypes.data, values.ctypes.data, cap,
                          out.ctypes.data, H * hd, 0.25)
        np.testing.assert_array_equal(out, exact.attention(q, keys, values, start, 0.25), err_msg=str((start, n)))


# -- whole models in the packed format v2, written with numpy ----------------------------------------
MIXES = {  # module kind -> (levels, group); "embed": the table
    "int4": {"attn_in": (16, 32), "attn_out": (16, 32), "mlp_in": (16, 32), "mlp_out": (16, 32), "embed": (16, 32)},
    "mixed": {"attn_in": (8, 32), "attn_out": (2, 64), "mlp_in": (3, None), "mlp_out": (4, 32), "embed": (256, None)},
    "split": {"q_proj": (16, 32), "k_proj": (4, 32), "v_proj": (2, 32), "attn_in": (16, 32), "attn_out": (8, None),
              "mlp_in": (16, 64), "mlp_out": (2, None), "embed": (16, 64)},
}


def block_linears(layout: format.Layout, names) -> dict[str, list[str]]:
    """Block linear -> the keys a mix may give its format by: its short name (q_proj), its role."""
    roles = {**{n: "attn_in" for n in layout.attention_in}, layout.attention_out: "attn_out",
             **{n: "mlp_in" for n in layout.mlp_in}, layout.mlp_out: "mlp_out"}
    out = {}
    for name in names:
        if name.startswith(layout.layers + "."):
            tail = name[len(layout.layers) + 1:].split(".", 1)[1]  # without the layer index
            if tail in roles:
                out[name] = [tail.rsplit(".", 1)[-1], roles[tail]]
    return out


def round_to_nearest(w: np.ndarray, q: format.Quantizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, fp16 scales and mins of w on the min-max grid of each group (no training)."""
    rows, cols = w.shape
    wg = w.reshape(rows, q.groups(cols), -1).astype(np.float64)
    lo, hi = wg.min(-1), wg.max(-1)
    scale = np.maximum((hi - lo) / (q.levels - 1), 1e-6).astype(np.float16)
    mins = lo.astype(np.float16)
    s, m = scale.astype(np.float64)[..., None], mins.astype(np.float64)[..., None]
    codes = np.clip(np.rint((wg - m) / s), 0, q.levels - 1).astype(np.uint8).reshape(rows, cols)
    return codes, scale, mins


def write_packed(hf_dir: Path, out: Path, mix: dict, act_bits: int | None = 8) -> Path:
    """A packed v2 directory from a Hugging Face one: block linears and the embedding table
    quantised (round to nearest) in the formats of `mix`; everything else as it was."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((hf_dir / "config.json").read_text())
    layout = format.layout_of(config["model_type"])
    tensors, quant = load_file(str(hf_dir / "model.safetensors")), {}
    linears = block_linears(layout, [k[:-len(".weight")] for k in tensors if k.endswith(".weight")])
    for name in [layout.embeddings[0], *linears]:
        weight = tensors[f"{name}.weight"]
        if name in linears:
            levels, group = next(mix[k] for k in linears[name] if k in mix)
            weight = weight.T if layout.transposed else weight
        else:
            levels, group = mix["embed"]
        q = format.Quantizer(levels, group)
        codes, scale, mins = round_to_nearest(weight, q)
        del tensors[f"{name}.weight"]
        tensors |= {f"{name}.{k}": v for k, v in format.pack_codes(codes, q.bits).items()}
        tensors[format.scale_name(name)], tensors[f"{name}.{format.MIN}"] = scale, mins
        quant[name] = q.to_json()
    tensors.pop("lm_head.weight", None)  # tied
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / format.WEIGHTS))
    config["xtc"] = {"version": 2, "method": "test", "quant": quant, "act_bits": act_bits}
    (out / format.CONFIG).write_text(json.dumps(config))
    for f in hf_dir.iterdir():
        if f.name not in (format.CONFIG, format.WEIGHTS) and f.is_file():
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def packed_dirs(tiny_dirs, tmp_path_factory):
    return {(arch, mix): write_packed(tiny_dirs[arch], tmp_path_factory.mktemp(f"v2-{arch}-{mix}"), MIXES[mix])
            for arch in ("gpt2", "llama") for mix in MIXES}


def close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float rounding; with 8-bit activations a rounding difference of 1e-7 can move
    one activation code by one step now and then (as any two correct implementations do), so
    the comparison allows 1% of the logits' scale, as tests/test_runtime.py does; a bug is off by
    the scale itself."""
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=0.01 * float(np.abs(want).max()))


def ids_of(rt, n: int = 40) -> list[int]:
    text = "def greet(name):\n    return 'hello ' + name\n\n\nclass Counter:\n    def add(self, n=1):\n        self.n += n\n"
    return rt.tokenizer(text, add_special_tokens=False)["input_ids"][:n]


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_packed_v2_models_run_fused_on_every_variant(packed_dirs, arch, mix, monkeypatch):
    """Every block runs fused on the integer kernels, prefill and decoding; every variant gives
    the numpy path's logits bit for bit, prefill and decoding alike (the same suggestions on
    every CPU)."""
    rt = load_runtime(str(packed_dirs[arch, mix]))
    assert rt.loader == "direct" and all(rt.fused)
    kinds = {type(p) for b in rt.blocks for lin in (b.qkv, b.out, b.up, b.down) for p in getattr(lin, "parts", [lin])}
    assert kinds <= {AffineLinear, BinaryLinear} and (mix != "split" or isinstance(rt.blocks[0].qkv, Split) == (arch == "llama"))
    ids = ids_of(rt)
    numpy_rt = Runtime(None, rt.tokenizer, spec=rt.spec, kernels=False)
    want = numpy_rt.forward(ids, all_logits=True)
    runs = {}
    for variant in (v for v in kernels.VARIANTS if kernels.supported(v)):
        monkeypatch.setenv(kernels.ENV, variant)  # as a user forces one
        vrt = load_runtime(str(packed_dirs[arch, mix]))
        assert vrt.kernels == variant
        runs[variant] = got = vrt.forward(ids, all_logits=True)
        np.testing.assert_array_equal(got, want)
        vrt.reset()
        last = vrt.prefill(ids[:30])
        steps = [last] + [vrt.step(token) for token in ids[30:-1]]  # decoding: the matrix-vector kernels
        np.testing.assert_array_equal(np.stack(steps), got[29:-1])
    numpy_rt.reset()
    numpy_rt.prefill(ids[:30])
    np.testing.assert_array_equal(numpy_rt.step(ids[30]), want[30])
    assert len(runs) >= 1


def test_weights_only_quantised_students_run_in_fp32(tiny_dirs, tmp_path):
    """act_bits null: the linears see fp32 activations, so they run as fp32 on the dequantised weights."""
    out = write_packed(tiny_dirs["llama"], tmp_path / "w4a32", MIXES["int4"], act_bits=None)
    rt = load_runtime(str(out))
    assert isinstance(rt.blocks[0].down, DenseLinear) and not any(rt.fused)
    ids = ids_of(rt)
    want = Runtime(None, rt.tokenizer, spec=rt.spec, kernels=False).forward(ids, all_logits=True)
    np.testing.assert_allclose(rt.forward(ids, all_logits=True), want, rtol=1e-3, atol=1e-4 * float(np.abs(want).max()))


def write_packed_v1(hf_dir: Path, out: Path, weight_bits: int, group: int | None, embed_bits: int) -> Path:
    """A packed directory in the old format v1: XTC's binary (alpha * sign) or ternary block
    linears and symmetric integer embeddings, each with one `scale` per row or group, no `min`."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((hf_dir / "config.json").read_text())
    layout = format.layout_of(config["model_type"])
    tensors = load_file(str(hf_dir / "model.safetensors"))
    linears = block_linears(layout, [k[:-len(".weight")] for k in tensors if k.endswith(".weight")])
    for name in [layout.embeddings[0], *linears]:
        w = tensors.pop(f"{name}.weight")
        w = w.T if name in linears and layout.transposed else w
        bits, g = (weight_bits, group) if name in linears else (embed_bits, None if embed_bits == 8 else 64)
        wg = w.reshape(w.shape[0], -1, g or w.shape[1])
        if name not in linears:  # symmetric integers
            qmax = 2 ** (bits - 1) - 1
            scale = (np.abs(wg).max(-1) / qmax).astype(np.float16)
            codes = np.clip(np.rint(wg / scale.astype(np.float32)[..., None]), -qmax, qmax)
        elif bits == 1:
            scale, codes = np.abs(wg).mean(-1).astype(np.float16), np.where(wg >= 0, 1, -1)
        else:
            keep = np.abs(wg) > 0.7 * np.abs(wg).mean(-1, keepdims=True)
            scale = ((np.abs(wg) * keep).sum(-1) / np.maximum(keep.sum(-1), 1)).astype(np.float16)
            codes = np.sign(wg) * keep
        tensors[format.packed_name(name)] = format.pack_ints(codes.reshape(w.shape).astype(np.int8), bits)
        tensors[format.scale_name(name)] = scale
    tensors.pop("lm_head.weight", None)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / format.WEIGHTS))
    config["xtc"] = {"version": 1, "method": "quant", "weight_bits": weight_bits, "act_bits": 8, "group_size": group,
                     "embed_bits": embed_bits}
    (out / format.CONFIG).write_text(json.dumps(config))
    for f in hf_dir.iterdir():
        if f.name not in (format.CONFIG, format.WEIGHTS) and f.is_file():
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.parametrize("weight_bits,group,embed_bits", [(1, None, 8), (1, 32, 4), (2, None, 8)])
def test_v1_packed_models_still_load_onto_the_new_kernels(tiny_dirs, tmp_path, weight_bits, group, embed_bits):
    """v1 binary is the 1-bit case (scale 2 alpha, min -alpha), v1 ternary 2-bit codes (code + 2),
    v1 symmetric tables affine ones: the same fused kernels run them."""
    out = write_packed_v1(tiny_dirs["llama"], tmp_path / "v1", weight_bits, group, embed_bits)
    rt = load_runtime(str(out))
    assert rt.loader == "direct" and (all(rt.fused) or rt.lib is None)
    cls = BinaryLinear if weight_bits == 1 else AffineLinear
    assert all(isinstance(p, cls) for b in rt.blocks for lin in (b.qkv, b.out, b.up, b.down)
               for p in getattr(lin, "parts", [lin]))
    assert (rt.spec.head.packed4 is not None) == (embed_bits == 4)
    from safetensors.numpy import load_file

    stored = load_file(str(out / format.WEIGHTS))
    name = "model.layers.0.mlp.down_proj"
    cols = rt.blocks[0].down.in_features
    codes = format.unpack_ints(stored[format.packed_name(name)], weight_bits, cols).astype(np.float32)
    scale = stored[format.scale_name(name)].astype(np.float32)
    want = (codes.reshape(len(codes), scale.shape[1], -1) * scale[..., None]).reshape(codes.shape)
    np.testing.assert_array_equal(rt.blocks[0].down.dense(), want)  # v1 weights decoded exactly
    ids = ids_of(rt)
    close(rt.forward(ids, all_logits=True), Runtime(None, rt.tokenizer, spec=rt.spec, kernels=False).forward(ids, all_logits=True))
