"""Time each linear format on the compiled kernels, per instruction-set variant.

    python benchmarks/kernels.py [--runs 15] [--threads N] [--variants avx2,avx512-vnni] [--json]

Formats: fp32 (the panel GEMM), W1A8 (bit-packed binary: lookup-table GEMV; GEMM bit-expanding on
AVX2, the affine kernel's 1-bit VNNI tiles on AVX-512),
W2A8 / W3A8 / W4A8 (affine codes, groups of 64: `xtc_affine`), all with a scale and min per
group. Matrices: 576 x 1536 and 1536 x 576 (out x in: SmolLM2's down and gate/up projections).
GEMV: 1 token (decoding); GEMM: 512 tokens (prefill). Only the kernel call is timed: activations
are quantised once beforehand (that step is shared by every format and fused into the norms in
the runtime). Reported: median of `--runs` calls after a warm-up, ns per weight (time / (out x in),
whatever the token count), GMAC/s, GB/s of weights and scales read (GEMV only: a GEMM re-reads
cached weights), and the speed-up over fp32 on the same variant, shape and token count (all from
the median; the best run is shown too, for machines shared with other programs). Variants
this CPU lacks are skipped with a note. Weights are random: speed does not depend on values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xtc.infer import kernels  # noqa: E402
from xtc.infer.layers import AffineLinear, BinaryLinear, DenseLinear, Kernels, Work  # noqa: E402
from xtc.infer.runtime import default_threads  # noqa: E402

SHAPES = [(576, 1536), (1536, 576)]
TOKENS = {"gemv": 1, "gemm": 512}
FORMATS = ["fp32", "W1A8", "W2A8", "W3A8", "W4A8"]
GROUP = 64


def make_linear(fmt: str, rows: int, cols: int, rng: np.random.Generator):
    if fmt == "fp32":
        lin = DenseLinear(rng.standard_normal((rows, cols)).astype(np.float32) * 0.02)
        lin.prepare()
        return lin
    bits = int(fmt[1])
    codes = rng.integers(0, 2 ** bits, (rows, cols)).astype(np.uint8)
    scale = rng.uniform(0.005, 0.02, (rows, cols // GROUP)).astype(np.float16)
    mins = (-scale.astype(np.float32) * (2 ** bits - 1) / 2).astype(np.float16)
    if bits == 1:
        return BinaryLinear.from_affine(codes, scale, mins)
    return AffineLinear(codes, bits, scale, mins)


def weight_bytes(lin) -> int:
    """Bytes the matrix-vector kernel reads: weights in their kernel layout plus scales and mins."""
    if isinstance(lin, DenseLinear):
        return lin.panels.nbytes
    if isinstance(lin, BinaryLinear):  # the GEMV reads the lookup-table layout
        return lin.lut_bits.nbytes + lin.scale_t.nbytes + lin.min_t.nbytes
    return lin.weights.nbytes + lin.sm.nbytes


def timer(lin, ctx: Kernels, tokens: int, rng: np.random.Generator):
    """A no-argument function running the kernel once on prepared inputs."""
    x = rng.standard_normal((tokens, lin.in_features)).astype(np.float32)
    y = np.empty((tokens, lin.out_features), np.float32)
    lib = ctx.lib
    if isinstance(lin, DenseLinear):
        args = (tokens, lin.out_features, lin.in_features, x.ctypes.data, lin.in_features, lin.panels.ctypes.data,
                None, y.ctypes.data, lin.out_features, 0)
        return lambda: (lib.xtc_gemm_f32(*args), x, y)  # x, y: keep the buffers behind the raw addresses alive
    lin.prepare(ctx)  # what the runtime does once at load (AVX-512: the 1-bit tiles' layout)
    work = Work(tokens, lin.padded, lin.groups)
    lib.xtc_quant(x.ctypes.data, tokens, lin.in_features, lin.in_features, lin.padded, lin.kgroup, work.q, work.sx,
                  work.qsum)
    out = y.ctypes.data
    return lambda: (lin.run(ctx, tokens, work, out, lin.out_features, 0), y)


def measure(fn, runs: int) -> tuple[float, float]:
    """(median, best) seconds of `runs` calls after a warm-up call (page in, fill caches, wake the
    thread pool). The best shows the kernel where other programs share the cores."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def run(variants: list[str], runs: int, threads: int) -> tuple[list[dict], list[str]]:
    rows_out, notes = [], []
    for variant in variants:
        lib = kernels.load(variant)
        if lib is None:
            notes.append(f"{variant}: skipped ({kernels.error})")
            continue
        lib.xtc_set_threads(threads)
        ctx = Kernels(lib)
        for rows, cols in SHAPES:
            rng = np.random.default_rng(rows)
            linears = {fmt: make_linear(fmt, rows, cols, rng) for fmt in FORMATS}
            for mode, tokens in TOKENS.items():
                base = None
                for fmt in FORMATS:
                    lin = linears[fmt]
                    seconds, best = measure(timer(lin, ctx, tokens, rng), runs)
                    base = seconds if fmt == "fp32" else base
                    nbytes = weight_bytes(lin)
                    rows_out.append({
                        "variant": variant, "shape": f"{rows}x{cols}", "mode": mode, "tokens": tokens, "format": fmt,
                        "us": round(seconds * 1e6, 1), "best_us": round(best * 1e6, 1), "ns_per_weight": round(seconds * 1e9 / (rows * cols), 4),
                        "gmacs": round(rows * cols * tokens / seconds / 1e9, 1),
                        "gb_s": round(nbytes / seconds / 1e9, 1) if mode == "gemv" else None,
                        "weight_kb": round(nbytes / 1024, 1), "vs_fp32": round(base / seconds, 2)})
    return rows_out, notes


def table(rows: list[dict]) -> str:
    head = ["variant", "shape", "mode", "format", "median us", "best us", "ns/weight", "GMAC/s", "GB/s", "weights KB",
            "x fp32"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], r["shape"], f"{r['mode']} ({r['tokens']})", r["format"], f"{r['us']:.1f}", f"{r['best_us']:.1f}",
                 f"{r['ns_per_weight']:.4f}", f"{r['gmacs']:.1f}", "" if r["gb_s"] is None else f"{r['gb_s']:.1f}",
                 f"{r['weight_kb']:.0f}", f"{r['vs_fp32']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="timed calls per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--variants", default=",".join(kernels.BEST_FIRST[::-1]),
                    help="comma-separated kernel variants (default: all; ones this CPU lacks are skipped)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = ap.parse_args(argv)
    variants = [kernels.ALIASES.get(v.strip(), v.strip()) for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in kernels.VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}: expected {', '.join(kernels.VARIANTS)}")
    rows, notes = run(variants, args.runs, args.threads)
    if args.json:
        print(json.dumps({"threads": args.threads, "runs": args.runs, "rows": rows, "notes": notes}, indent=1))
    else:
        print(f"threads {args.threads}, median of {args.runs} runs, groups of {GROUP}")
        print(table(rows))
        for note in notes:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
