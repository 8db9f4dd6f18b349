"""`xtc bench`: latency, throughput, memory and size of a model on this machine.

The request is what an editor sends: a prompt of `prompt_tokens` tokens of real Python (by default
the start of the standard library's `textwrap.py`), then `new_tokens` generated greedily. Cold =
empty cache; warm = the same request after one more character was typed at the end (the next
character of the file), with the cache left as the cold request left it (prompt plus its
generated tokens), so only the changed tail is re-read. Exactly `new_tokens` tokens are generated
every time (no early stop), so runs and engines are comparable. Timings include tokenising the
prompt. This module imports neither torch nor transformers for a packed or Hugging Face
directory, so `rss_mb` is what such a runtime costs.
"""

from __future__ import annotations

import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.format import weight_files_mb
from xtc.core.memory import peak_rss_mb, rss_mb
from xtc.infer.runtime import load_runtime
from xtc.infer.tokenizer import decode_exact

DEFAULT_PROMPT_FILE = Path(sysconfig.get_paths()["stdlib"]) / defaults.BENCH_PROMPT_FILE


def prompt_texts(tokenizer, text: str, prompt_tokens: int) -> tuple[str, str]:
    """The first `prompt_tokens` tokens of `text` as text, and that text plus the next character."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = decode_exact(tokenizer, ids[:prompt_tokens])
    cut = len(prefix)
    if not text.startswith(prefix):  # decoding is not a prefix: cut by chars
        cut = min(len(text), prompt_tokens * 4)
    cold = text[:cut]
    typed = text[cut] if cut < len(text) else "x"
    return cold, cold + typed


def generate(rt, tokenizer, text: str, new_tokens: int) -> tuple[float, float, list[int], int]:
    """Tokenise, prefill, then greedy tokens; (prefill seconds, decode seconds, tokens, prompt length)."""
    t0 = time.perf_counter()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    logits = rt.prefill(ids)
    token = int(np.argmax(logits))
    t1 = time.perf_counter()
    out = [token]
    for _ in range(new_tokens - 1):
        token = int(np.argmax(rt.step(token)))
        out.append(token)
    return t1 - t0, time.perf_counter() - t1, out, len(ids)


def run_bench(src: str, prompt_text: str | None = None, prompt_tokens: int = defaults.BENCH_PROMPT_TOKENS,
              new_tokens: int = defaults.BENCH_NEW_TOKENS, repeats: int = defaults.BENCH_REPEATS,
              threads: int | None = None) -> dict:
    if prompt_tokens < 1 or new_tokens < 1 or repeats < 1:
        raise XtcError("prompt tokens, new tokens and repeats must be positive")
    source = "prompt text"
    if prompt_text is None:
        try:
            prompt_text = DEFAULT_PROMPT_FILE.read_text(encoding="utf-8")
        except OSError:
            raise XtcError(f"cannot read the default prompt {DEFAULT_PROMPT_FILE}; pass --prompt-file") from None
        source = f"stdlib {DEFAULT_PROMPT_FILE.name}"
    if not prompt_text.strip():
        raise XtcError("the prompt is empty")
    t = time.perf_counter()
    max_context = max(defaults.RUNTIME_MAX_CONTEXT, prompt_tokens + new_tokens + 8)
    rt = load_runtime(src, threads=threads, max_context=max_context)
    load_s = time.perf_counter() - t
    if prompt_tokens + new_tokens + 1 > rt.max_context:
        raise XtcError(f"{prompt_tokens} prompt + {new_tokens} new tokens exceed the model's context of {rt.max_context}")
    tok = rt.tokenizer
    cold_text, warm_text = prompt_texts(tok, prompt_text, prompt_tokens)

    cold, warm, prefill_s, decode_s = [], [], [], []
    n_prompt = 0
    generate(rt, tok, cold_text[:200], 2)  # touch every code path once (page in weights, thread pools)
    for _ in range(repeats):
        rt.reset()
        p, d, _, n_prompt = generate(rt, tok, cold_text, new_tokens)
        cold.append(p + d)
        prefill_s.append(p)
        decode_s.append(d)
        p, d, _, _ = generate(rt, tok, warm_text, new_tokens)  # the cache holds the cold request
        warm.append(p + d)
    path = rt.source.path  # None for a hub id: no local files to size
    rss = rss_mb()
    decode = statistics.median(decode_s)
    return {
        "model": src,
        "disk_mb": round(weight_files_mb(path), 2) if path is not None else None,
        "rss_mb": round(rss, 1),
        "prefill_tokens_per_s": round(n_prompt / statistics.median(prefill_s), 1),
        "decode_tokens_per_s": round((new_tokens - 1) / decode, 1) if new_tokens > 1 and decode > 0 else None,
        "latency_ms": round(1000 * statistics.median(cold), 1),
        "warm_latency_ms": round(1000 * statistics.median(warm), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_s": round(load_s, 2),
        "prompt": source,
        "prompt_tokens": n_prompt,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "threads": rt.threads,
        "kernels": rt.kernels,  # the compiled variant that ran ("avx512-vnni", "avx2") or "numpy"
        "kernels_error": rt.kernels_error,  # why numpy ran, if it did
        "loader": getattr(rt, "loader", "model"),
        "torch_loaded": "torch" in sys.modules,
        "latency_ms_runs": [round(1000 * s, 1) for s in cold],
        "warm_latency_ms_runs": [round(1000 * s, 1) for s in warm],
    }

