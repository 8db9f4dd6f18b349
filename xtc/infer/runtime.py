"""CPU inference for plain and compressed models: `Runtime(...).prefill(ids)` then `step(token)`,
over a key/value cache (`xtc.infer.kv_cache`) reused across calls for the unchanged prefix.

The weights come as a `Spec` of numpy layers (`xtc.infer.layers`, read by `xtc.infer.spec`
straight from safetensors, still bit-packed, without torch); the compiled kernels
(`xtc.infer.kernels`) are a member, `ops`, and numpy runs what they cannot. A block runs one of two
ways: `_block`, one call per layer (the reference: numpy, or the kernels per linear), or
`_block_fused`, ten kernel calls on preallocated buffers when all its linears run on 8-bit
activations (norm + quantisation, q/k/v, gate/up and residual adds fused). What differs between
architectures is in `ARCHITECTURES`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.sources import Source, load_with_transformers, resolve
from xtc.infer import exact, prepared
from xtc.infer import kernels as kernels_lib
from xtc.infer.kv_cache import KVCache
from xtc.infer.layers import Block, Int8Linear, Kernels, Spec, Split, Work
from xtc.infer.spec import Unsupported, spec_from_directory, spec_from_model
from xtc.infer.tokenizer import load_tokenizer

__all__ = ["ARCHITECTURES", "KVCache", "Runtime", "default_threads", "load_runtime"]

log = logging.getLogger("xtc")


def default_threads() -> int:
    """Physical cores: hyper-threads slow down dense matrix work."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or 1)
    except Exception:  # pragma: no cover - psutil is a dependency; stay robust anyway
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Architecture:
    """How a block of one architecture computes its MLP (attention is the same for all)."""

    gated_mlp: bool  # Llama: down(act(gate) * up) from one fused gate/up linear; GPT-2: down(act(fc))
    fused_activations: frozenset[str]  # activations the fused block's kernel computes
    act_kernel: int  # that kernel's selector (xtc_act_quant: 0 SiLU x up, 1 tanh GELU)


ARCHITECTURES = {
    "llama": Architecture(True, frozenset({"silu"}), 0),
    "gpt2": Architecture(False, frozenset({"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}), 1),
}
TANH_GELUS = ARCHITECTURES["gpt2"].fused_activations  # one formula: xtc_gelu_tanh, exact.gelu_tanh


class Runtime:
    """A model ready for CPU completion: `prefill(ids)` then `step(token)`, both returning
    next-token logits (a float32 numpy vector). Consecutive calls share the KV cache for the
    common prefix."""

    def __init__(self, model, tokenizer=None, name: str = "model", threads: int | None = None,
                 max_context: int = defaults.RUNTIME_MAX_CONTEXT, *, spec: Spec | None = None,
                 kernels: bool | str = True):
        """`model`: a transformers model (plain or fake-quantised), or None with `spec` (weights
        read by `spec_from_directory`). `kernels`: True picks the best compiled kernels (or what
        XTC_KERNELS forces), a variant name ("avx2", "avx512-vnni") asks for that one, False
        forces the numpy path (for tests)."""
        self.threads = threads or default_threads()
        self.ops = Kernels(None if kernels is False else kernels_lib.load(None if kernels is True else kernels))
        self.kernels = kernels_lib.name(self.lib)  # "avx512-vnni", "avx2" or "numpy"
        self.kernels_error = None if self.lib is not None or kernels is False else kernels_lib.error
        if self.lib is not None:
            self.lib.xtc_set_threads(self.threads)
        if spec is None:
            spec = spec_from_model(model, max_context)
            import torch

            torch.set_num_threads(self.threads)
        self.spec, self.tokenizer, self.name = spec, tokenizer, name
        self.config = getattr(model, "config", None)
        if spec.arch not in ARCHITECTURES:
            raise XtcError(f"the runtime has no block code for the {spec.arch!r} architecture")
        self.arch = ARCHITECTURES[spec.arch]
        self.n_heads, self.n_kv_heads, self.head_dim = spec.n_heads, spec.n_kv_heads, spec.head_dim
        self.max_context = min(max_context, spec.positions)
        if spec.rope is not None and len(spec.rope[0]) < self.max_context:  # the kernels read them unchecked
            raise ValueError(f"the spec's rotary tables cover {len(spec.rope[0])} positions, fewer than the runtime's "
                             f"context of {self.max_context}: build the spec with max_context >= {self.max_context}")
        self.blocks = spec.blocks
        self.attn_scale = spec.attn_scale or 1.0 / math.sqrt(self.head_dim)
        self.loader = "model"
        self.source: Source | None = None  # set by load_runtime
        self.cache = KVCache.allocate(len(self.blocks), self.n_kv_heads, self.head_dim, self.max_context)
        self._kv_ptrs, self._cap = self.cache.pointers(), self.cache.capacity
        self.fused = [self._can_fuse(b) for b in self.blocks]
        if self.lib is not None:  # kernel layouts, once (fp32 panels; AVX-512's 1-bit tiles)
            for b in self.blocks:
                for lin in (b.qkv, b.out, b.up, b.down):
                    lin.prepare(self.ops)
        self._works: dict[tuple, Work] = {}
        self._rope_ptrs = (None, None) if spec.rope is None else (spec.rope[0].ctypes.data, spec.rope[1].ctypes.data)

    @property
    def lib(self):
        """The compiled kernel library (ctypes), or None: numpy runs everything."""
        return self.ops.lib

    def _can_fuse(self, block: Block) -> bool:
        """A block whose four linears run on the integer kernels runs as a few fused kernel calls."""
        if self.lib is None:
            return False
        linears = (block.qkv, block.out, block.up, block.down)
        if not all(isinstance(lin, (Int8Linear, Split)) and lin.kernel_ok for lin in linears):
            return False
        return self.spec.activation in self.arch.fused_activations

    def _work(self, n: int, block: Block) -> Work:
        """Buffers for a fused block; kept for decoding-sized calls, fresh for a long prefill."""
        linears = (block.qkv, block.out, block.up, block.down)
        width = max(lin.padded for lin in linears)
        groups = max(lin.groups for lin in linears)
        if n > self.ops.gemv_rows:
            return Work(n, width, groups, block, self.n_heads * self.head_dim)
        key = (n, width, groups, block.qkv.out_features, block.up.out_features)
        if key not in self._works:
            self._works[key] = Work(n, width, groups, block, self.n_heads * self.head_dim)
        return self._works[key]

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
        x = spec.embed.lookup(np.asarray(ids, dtype=np.int64))
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
                x = x[-1:] if only_last else x
            else:
                x = self._block(i, block, x, start, n, only_last)
        self.cache.length = start + n
        self.cache.tokens.extend(ids)
        h = spec.final_norm(x if all_logits else x[-1:], self.ops)
        logits = spec.head.project(h, self.ops)
        return logits if all_logits else logits[0]

    def _block(self, i: int, b: Block, x: np.ndarray, start: int, n: int, only_last: bool) -> np.ndarray:
        """The reference block: x + attention(norm1 x), then + mlp(norm2 x)."""
        att = self._attention(i, b, b.norm1(x, self.ops), start, n, only_last)
        x = x[-1:] + att if only_last else x + att
        x += self._mlp(b, b.norm2(x, self.ops))
        return x

    def _block_fused(self, i: int, b: Block, x: np.ndarray, start: int, n: int, only_last: bool) -> None:
        """One integer-kernel block in place on the residual stream x: ten kernel calls, no temporaries."""
        lib, w, ops = self.lib, self._work(n, b), self.ops
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        D, width = x.shape[1], b.qkv.out_features
        xp = x.ctypes.data
        n1, n2 = b.norm1, b.norm2
        lib.xtc_norm_quant(xp, n, D, *n1.ptrs, n1.eps, int(n1.rms), b.qkv.padded, b.qkv.kgroup, w.q, w.sx, w.qsum)
        b.qkv.run(ops, n, w, w.qkv, width, 0)
        kp, vp = self._kv_ptrs[i]
        lib.xtc_rope_kv(w.qkv, n, start, H, KV, hd, width, *self._rope_ptrs, kp, vp, self._cap)
        q, m = w.qkv, n
        if only_last:
            q, m, start, xp = q + 4 * (n - 1) * width, 1, start + n - 1, xp + 4 * (n - 1) * D
        lib.xtc_attention(m, start, H, KV, hd, q, width, kp, vp, self._cap, w.att, H * hd, self.attn_scale)
        lib.xtc_quant(w.att, m, H * hd, H * hd, b.out.padded, b.out.kgroup, w.q, w.sx, w.qsum)
        b.out.run(ops, m, w, xp, D, 1)
        lib.xtc_norm_quant(xp, m, D, *n2.ptrs, n2.eps, int(n2.rms), b.up.padded, b.up.kgroup, w.q, w.sx, w.qsum)
        b.up.run(ops, m, w, w.gu, b.up.out_features, 0)
        lib.xtc_act_quant(self.arch.act_kernel, w.gu, m, b.down.in_features, b.up.out_features, b.down.padded,
                          b.down.kgroup, w.q, w.sx, w.qsum)
        b.down.run(ops, m, w, xp, D, 1)

    def _attention(self, i: int, block: Block, h: np.ndarray, start: int, n: int, only_last: bool = False) -> np.ndarray:
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = block.qkv(h, self.ops)  # (n, (H + 2 KV) hd)
        width = qkv.shape[1]
        lib = self.lib
        if self.spec.rope is not None:
            cos, sin = self.spec.rope
            if lib is not None:
                lib.xtc_rope(qkv.ctypes.data, n, H + KV, hd, width, cos.ctypes.data, sin.ctypes.data, start)
            else:
                qk = qkv[:, :(H + KV) * hd].reshape(n, H + KV, hd)
                qk[:] = _rotate(qk, cos[start:start + n, None], sin[start:start + n, None])
        self.cache.store(i, start, qkv[:, H * hd:(H + KV) * hd].reshape(n, KV, hd), qkv[:, (H + KV) * hd:].reshape(n, KV, hd))
        if only_last:
            qkv, start, n = qkv[-1:], start + n - 1, 1
        out = np.empty((n, H * hd), np.float32)
        if lib is not None:
            lib.xtc_attention(n, start, H, KV, hd, qkv.ctypes.data, width, *self._kv_ptrs[i], self._cap,
                              out.ctypes.data, H * hd, self.attn_scale)
        else:
            out[:] = exact.attention(qkv[:, :H * hd].reshape(n, H, hd), self.cache.keys[i], self.cache.values[i],
                                     start, self.attn_scale)
        return block.out(out, self.ops)

    def _mlp(self, block: Block, h: np.ndarray) -> np.ndarray:
        a = block.up(h, self.ops)
        if self.arch.gated_mlp:
            f = a.shape[1] // 2
            if self.lib is not None and self.spec.activation == "silu":
                out = np.empty((a.shape[0], f), np.float32)
                self.lib.xtc_silu_mul(a.ctypes.data, a.shape[0], f, a.shape[1], out.ctypes.data, f)
                a = out
            elif self.spec.activation == "silu":
                a = exact.silu_mul(a[:, :f], a[:, f:])
            else:
                a = _activate(a[:, :f], self.spec.activation) * a[:, f:]
        elif self.lib is not None and self.spec.activation in TANH_GELUS:
            self.lib.xtc_gelu_tanh(a.ctypes.data, a.size)
        else:
            a = _activate(a, self.spec.activation)
        return block.down(np.ascontiguousarray(a), self.ops)

    # -- prefix reuse ---------------------------------------------------------------------------
    def prefill(self, ids: list[int]) -> np.ndarray:
        """Next-token logits after `ids`, re-using the cache for the prefix shared with the last
        call (typing one character re-reads a token or two, not the whole prompt)."""
        if not ids:
            raise ValueError("prefill needs at least one token")
        common = self.cache.keep_prefix(ids)
        return self.forward(ids[common:])

    def step(self, token: int) -> np.ndarray:
        return self.forward([token])

    def reset(self) -> None:
        self.cache.clear()


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    rotated = np.concatenate((-x[..., half:], x[..., :half]), axis=-1)
    return x * cos + rotated * sin


def _activate(x: np.ndarray, name: str) -> np.ndarray:
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name in TANH_GELUS:
        return exact.gelu_tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float32])
        return 0.5 * x * (1.0 + erf(x / np.float32(math.sqrt(2.0))))
    raise XtcError(f"activation {name!r} is not supported by the runtime")


# -- loading ----------------------------------------------------------------------------------------
def load_runtime(src: str | Source, threads: int | None = None,
                 max_context: int = defaults.RUNTIME_MAX_CONTEXT) -> Runtime:
    """Load any model SRC (packed dir, HF dir, .gguf, installed name, "" for the installed
    default, hub id) for CPU completion; XtcError with a clear message if it cannot be used.

    Packed and Hugging Face directories are read directly (numpy, no torch). Anything else, and a
    Hugging Face directory the direct reader cannot read, goes through transformers (logged as a
    warning with the reason); a packed directory has no other route."""
    source = src if isinstance(src, Source) else resolve(src)
    reason = f"a {source.kind} source has no direct reader"
    if source.kind in ("packed", "hf"):
        try:
            # Packed models only: a plain one's cache would be a second fp32 copy of it.
            cache = prepared.Entry.of(source.path, max_context) if source.kind == "packed" else None
            spec = cache.load() if cache is not None else None
            fresh = spec is None
            if fresh:
                spec = spec_from_directory(source.path, max_context, source.config)
            tokenizer = load_tokenizer(source.path)
            if tokenizer is None:
                raise Unsupported("no tokenizer.json the fast tokenizer reads")
            rt = Runtime(None, tokenizer, source.name, threads=threads, max_context=max_context, spec=spec)
            if cache is not None and fresh:
                cache.save(rt.spec)  # after the runtime's own preparation (kernel panels), which it holds too
            rt.loader, rt.source = "direct", source
            return rt
        except (Unsupported, ValueError, KeyError, OSError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, Unsupported) else str(exc)
            if source.kind == "packed":
                raise XtcError(f"{source.path}: the runtime cannot read this packed model ({reason})") from None
    log.warning("%s: loading through transformers (slower, imports torch): %s", source.location, reason)
    model, tokenizer = load_with_transformers(source)
    rt = Runtime(model, tokenizer, source.name, threads=threads, max_context=max_context)
    rt.loader, rt.source = "transformers", source
    return rt
