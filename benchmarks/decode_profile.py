"""Where a decode step, a prefill and model loading spend their time, per kernel call.

    python benchmarks/decode_profile.py [--model models/smollm2-mixed-30l] [--tokens 30] [--prompt-tokens 500]

Each compiled-kernel call is timed by wrapping the ctypes library, so "in C" is the time inside
the kernels and the rest of a step is Python, ctypes and NumPy around them. The wrapper itself
costs a few microseconds per call: the plain (unwrapped) step time is shown beside it. Thread
counts 1 and 2 alternate step by step in one process (`xtc_set_threads`), so their ratio is
measured side by side even on a machine shared with other programs. Medians throughout.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xtc.infer.runtime import load_runtime  # noqa: E402
from xtc.infer.spec import spec_from_directory  # noqa: E402
from xtc.infer.tokenizer import load_tokenizer  # noqa: E402


class TimedLib:
    """The kernel library with every `xtc_*` call timed into `seconds` and `calls`."""

    def __init__(self, lib):
        self._lib = lib
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()

    def __getattr__(self, name):
        fn = getattr(self._lib, name)
        if not name.startswith("xtc_"):
            return fn

        def timed(*args):
            t = time.perf_counter()
            out = fn(*args)
            self.seconds[name] += time.perf_counter() - t
            self.calls[name] += 1
            return out

        return timed


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/smollm2-mixed-30l")
    ap.add_argument("--tokens", type=int, default=30, help="timed decode steps per setting")
    ap.add_argument("--prompt-tokens", type=int, default=500)
    args = ap.parse_args()

    t0 = time.perf_counter()
    spec = spec_from_directory(Path(args.model), 2048)
    t1 = time.perf_counter()
    tokenizer = load_tokenizer(Path(args.model))
    t2 = time.perf_counter()
    del spec
    t3 = time.perf_counter()
    rt = load_runtime(args.model)
    t4 = time.perf_counter()
    print(f"CPU: {cpu_name()}; kernels {rt.kernels}; default threads {rt.threads}")
    print(f"model ready (load_runtime) {1e3 * (t4 - t3):.0f} ms; measured apart before it: reading + relayout of "
          f"the weights (spec_from_directory) {1e3 * (t1 - t0):.0f} ms, tokenizer {1e3 * (t2 - t1):.0f} ms")
    lib = rt.lib
    if lib is None:
        sys.exit(f"no compiled kernels: {rt.kernels_error}")

    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:args.prompt_tokens]

    # Prefill, per op (default threads).
    timed = TimedLib(lib)
    rt.reset()
    rt.ops.lib = timed
    t = time.perf_counter()
    token = int(np.argmax(rt.prefill(ids)))
    prefill_s = time.perf_counter() - t
    rt.ops.lib = lib
    print(f"\nprefill of {len(ids)} tokens, {rt.threads} threads: {1e3 * prefill_s:.0f} ms, in C "
          f"{1e3 * sum(timed.seconds.values()):.0f} ms")
    for name, s in sorted(timed.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20s} {1e3 * s:8.1f} ms  {timed.calls[name]:5d} calls")

    # Decode: settings alternate step by step (side by side under the same load).
    settings = [(threads, wrapped) for threads in (1, 2) for wrapped in (False, True)]
    steps: dict = {s: [] for s in settings}
    per_op: dict = {threads: TimedLib(lib) for threads in (1, 2)}
    for _ in range(3):  # warm-up
        token = int(np.argmax(rt.step(token)))
    for _ in range(args.tokens):
        for threads, wrapped in settings:
            lib.xtc_set_threads(threads)
            rt.ops.lib = per_op[threads] if wrapped else lib
            t = time.perf_counter()
            token = int(np.argmax(rt.step(token)))
            steps[threads, wrapped].append(time.perf_counter() - t)
    rt.ops.lib = lib
    lib.xtc_set_threads(rt.threads)
    n = args.tokens
    print(f"\ndecode after the prompt, median of {n} steps per setting, settings interleaved")
    for threads in (1, 2):
        plain, wrapped = (statistics.median(steps[threads, w]) for w in (False, True))
        ops = per_op[threads]
        in_c = sum(ops.seconds.values()) / n
        print(f"{threads} thread(s): step {1e3 * plain:.2f} ms (timed {1e3 * wrapped:.2f} ms), in C "
              f"{1e3 * in_c:.2f} ms = {100 * in_c / wrapped:.0f}% of the timed step; around the kernels "
              f"{1e3 * (wrapped - in_c):.2f} ms over {sum(ops.calls.values()) // n} calls")
        for name, s in sorted(ops.seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {name:20s} {1e3 * s / n:7.3f} ms  {ops.calls[name] // n:4d} calls/token")
    ratio = statistics.median(steps[2, False]) / statistics.median(steps[1, False])
    print(f"2 threads / 1 thread step time: {ratio:.2f}")


if __name__ == "__main__":
    main()
