"""The runtime's compiled CPU kernels: the C++ files in this folder (one per family, see below),
built once per instruction set with the system's g++ and loaded with ctypes, so the runtime needs
neither torch nor a build step at install time.

    common.h         includes, thread count, helpers shared by every file
    elementwise.cpp  8-bit activation quantisation (fused behind norms / MLP activations), norms, activations
    gemm_f32.cpp     fp32 linears (panel GEMM)
    binary.cpp       1-bit linears: bit-expanding GEMM for prefill (AVX2), lookup-table GEMV for decoding
    affine.cpp       k-bit affine linears (scale * q + min in groups, k = 1..4), GEMM and GEMV on int8
                     dot products (AVX-512 runs 1-bit prefill here too: docs/decode-speed.md)
    head.cpp         the output head on fp32 / int8 / 4-bit affine tables
    attention.cpp    attention over the KV cache, rotary embedding

Every file is compiled into one shared library per variant (instruction set):
`avx2` (AVX2 + FMA + F16C: every x86-64 CPU the runtime supports) and `avx512-vnni` (adds
AVX-512 F/BW/VL/DQ and VNNI; kernels take 512-bit paths under `#if XTC_AVX512`). `load()` picks
the best variant this CPU runs, or the one `XTC_KERNELS` names (`avx2`, `avx512`/`avx512-vnni`,
`numpy`: for tests and benchmarks). When none can be used (no compiler, unsupported CPU, build
error) it returns None, `error` says why, a warning is logged, and the runtime falls back to
numpy. Libraries are cached under `$XDG_CACHE_HOME/xtc/kernels` (default `~/.cache/xtc/kernels`),
keyed by variant and the hash of the sources and flags.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("xtc")

SOURCE_DIR = Path(__file__).resolve().parent
VERSION = 5  # xtc_version() of the sources this module's signatures describe
ENV = "XTC_KERNELS"
NUMPY = "numpy"


@dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...]  # instruction-set flags for g++
    cpu: frozenset[str]  # /proc/cpuinfo flags the CPU must have


VARIANTS = {
    "avx2": Variant("avx2", ("-mavx2", "-mfma", "-mf16c"), frozenset({"avx2", "fma", "f16c"})),
    "avx512-vnni": Variant("avx512-vnni",
                           ("-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                            "-mavx512vnni"),
                           frozenset({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                                      "avx512_vnni"})),
}
BEST_FIRST = ("avx512-vnni", "avx2")
ALIASES = {"avx512": "avx512-vnni", "0": NUMPY, "false": NUMPY, "no": NUMPY, "off": NUMPY, "none": NUMPY}
# -Werror is for the tests (tests/test_kernels.py builds every variant with it): a user's newer
# compiler may warn about something new, which must not cost them the kernels.
# -ffp-contract=off: no multiply and add fused unless the source says so, whatever the instruction
# set, so every build rounds as the numpy reference does (xtc.infer.exact).
BASE_FLAGS = ("-O3", "-fopenmp", "-fPIC", "-fno-math-errno", "-ffp-contract=off", "-std=c++17", "-Wall", "-Wextra")
WERROR = ("-Werror",)

_P = ctypes.c_void_p
_I = ctypes.c_int
_F = ctypes.c_float
SIGNATURES = {
    "xtc_version": ([], _I),
    "xtc_set_threads": ([_I], None),
    "xtc_threads_used": ([], _I),
    "xtc_quant": ([_P, _I, _I, _I, _I, _I, _P, _P, _P], None),
    "xtc_norm_quant": ([_P, _I, _I, _P, _P, _F, _I, _I, _I, _P, _P, _P], None),
    "xtc_act_quant": ([_I, _P, _I, _I, _I, _I, _I, _P, _P, _P], None),
    "xtc_gemm_b1": ([_I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _P, _I], None),
    "xtc_gemv_lut": ([_I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _I, _P, _P, _I, _I, _P], None),
    "xtc_affine": ([_I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I], None),
    "xtc_gemm_f32": ([_I, _I, _I, _P, _I, _P, _P, _P, _I, _I], None),
    "xtc_gemv_f32rows": ([_I, _I, _I, _P, _I, _P, _P, _I], None),
    "xtc_gemv_i8f": ([_I, _I, _I, _I, _P, _I, _P, _P, _P, _P, _I], None),
    "xtc_gemv_u4f": ([_I, _I, _I, _I, _P, _I, _P, _P, _P, _I], None),
    "xtc_attention": ([_I, _I, _I, _I, _I, _P, _I, _P, _P, _I, _P, _I, _F], None),
    "xtc_norm": ([_P, _I, _I, _I, _P, _P, _F, _I, _P, _I], None),
    "xtc_rope": ([_P, _I, _I, _I, _I, _P, _P, _I], None),
    "xtc_rope_kv": ([_P, _I, _I, _I, _I, _I, _I, _P, _P, _P, _P, _I], None),
    "xtc_silu_mul": ([_P, _I, _I, _I, _P, _I], None),
    "xtc_gelu_tanh": ([_P, ctypes.c_long], None),
}

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}  # variant -> library (None: it failed, see _errors)
_errors: dict[str, str] = {}
error: str | None = None  # why the last load() gave None (for `xtc bench` and the tests)


class BuildError(RuntimeError):
    """The compiler failed on the kernel sources (its message holds the compiler's output)."""


def sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.cpp"))


def headers() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.h"))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xtc" / "kernels"


def compiler() -> str | None:
    """The C++ compiler's path (`CXX`, default g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def flags(variant: str, werror: bool = False) -> list[str]:
    return [*BASE_FLAGS, *VARIANTS[variant].flags, *(WERROR if werror else ())]


def digest(variant: str) -> str:
    """Hash of everything that makes a build: sources, headers, flags."""
    h = hashlib.sha256(" ".join(flags(variant)).encode())
    for path in headers() + sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def library_path(variant: str) -> Path:
    return cache_dir() / f"xtc-kernels-{variant}-{digest(variant)}.so"


# -- what this CPU runs -------------------------------------------------------------------------
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: no kernels)."""
    if sys.platform != "linux":
        return frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(line.split(":", 1)[1].split())


def supported(variant: str, cpu: frozenset[str] | None = None) -> bool:
    return VARIANTS[variant].cpu <= (cpu_flags() if cpu is None else cpu)


def best_variant(cpu: frozenset[str] | None = None) -> str | None:
    return next((v for v in BEST_FIRST if supported(v, cpu)), None)


def requested() -> str | None:
    """The variant `XTC_KERNELS` forces (a name, or "numpy"), or None: choose by CPU."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value or value in ("1", "auto", "true", "yes"):
        return None
    value = ALIASES.get(value, value)
    if value != NUMPY and value not in VARIANTS:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join([*VARIANTS, 'avx512', NUMPY])}")
    return value


# -- building -----------------------------------------------------------------------------------
def build(variant: str, target: Path, werror: bool = False) -> Path:
    """Compile every source for `variant` into the shared library `target` (atomically: concurrent
    builders never see a partial file). Files compile in parallel. BuildError on failure."""
    cxx = compiler()
    if cxx is None:
        raise BuildError(f"no C++ compiler: {os.environ.get('CXX', 'g++')} is not on PATH")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    options = flags(variant, werror)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [Path(tmp) / f"{src.stem}.o" for src in sources()]

        def run(cmd: list[str]) -> None:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise BuildError(f"{' '.join(cmd[-3:])}: {proc.stderr.strip()[-3000:]}")

        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            jobs = [pool.submit(run, [cxx, *options, "-c", str(src), "-o", str(obj)])
                    for src, obj in zip(sources(), objects)]
            for job in jobs:
                job.result()
        out = Path(tmp) / target.name
        run([cxx, *options, "-shared", *map(str, objects), "-o", str(out)])
        os.replace(out, target)
    return target


def _open(variant: str) -> ctypes.CDLL:
    target = library_path(variant)
    if not target.exists():
        log.info("building the %s kernels (once) into %s", variant, target)
        build(variant, target)
    lib = ctypes.CDLL(str(target))
    for name, (args, res) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if lib.xtc_version() != VERSION:
        raise BuildError(f"{target} reports version {lib.xtc_version()}, expected {VERSION}")
    lib.variant = variant  # what Runtime.kernels reports
    return lib


def _spin_briefly() -> None:
    # Spinning OpenMP teams starve each other on a busy machine (docs/decode-speed.md); a short
    # spin yields the cores. libgomp reads it once, so it must be set before the library loads.
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "1000"


def load(variant: str | None = None) -> ctypes.CDLL | None:
    """The compiled kernels of `variant` (default: what XTC_KERNELS forces, else the best this CPU
    runs), built on first use; None when they cannot be used, with `error` set and a warning
    logged (numpy then runs everything)."""
    global error
    try:
        variant = ALIASES.get(variant, variant) if variant else requested() or best_variant()
    except ValueError as exc:
        error = str(exc)
        log.warning("compiled kernels unavailable, using numpy: %s", error)
        return None
    if variant is None:
        error = "this CPU lacks AVX2/FMA/F16C (or is not Linux x86-64)"
        log.warning("compiled kernels unavailable, using numpy: %s", error)
        return None
    if variant == NUMPY:
        error = "numpy was asked for" + (f" ({ENV}={os.environ[ENV]})" if os.environ.get(ENV) else "")
        log.info("compiled kernels off: %s", error)
        return None
    if variant not in VARIANTS:
        raise ValueError(f"unknown kernel variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    with _lock:
        if variant not in _libs:
            _libs[variant] = None
            if not supported(variant):
                missing = sorted(VARIANTS[variant].cpu - cpu_flags())
                _errors[variant] = f"this CPU cannot run the {variant} kernels (lacks {', '.join(missing)})"
            else:
                _spin_briefly()
                try:
                    _libs[variant] = _open(variant)
                except (OSError, BuildError, subprocess.SubprocessError, AttributeError) as exc:
                    _errors[variant] = f"{exc.__class__.__name__}: {str(exc)[:1000]}"
            if _libs[variant] is None:
                log.warning("compiled kernels unavailable, using numpy: %s", _errors[variant])
        if _libs[variant] is None:
            error = _errors[variant]
        return _libs[variant]


def name(lib: ctypes.CDLL | None) -> str:
    """The variant a loaded library runs ("avx2", "avx512-vnni"), or "numpy" for None."""
    return NUMPY if lib is None else lib.variant
