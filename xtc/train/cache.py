"""The teacher pass, stored on disk: what the later stages need from the teacher, computed once.

For every training window (`seq_len` tokens) the cache holds the hidden state at each decoder-block
boundary (the first layer's input, then every layer's output) and the teacher's top-k next-token
logits, in half precision, as memory-mapped NumPy files in one directory:

    tokens.npy       (windows, seq_len)                  int32    the training windows
    hidden.npy       (layers + 1, windows, seq_len, d)   float16  block-boundary activations
    topk_ids.npy     (windows, seq_len, k)               int32    the teacher's top-k next tokens
    topk_logits.npy  (windows, seq_len, k)               float16  and their logits
    progress.json    windows done: a killed pass continues there

Block-wise distillation reads two boundaries at a time, the end-to-end stage the logits; no later
stage runs the teacher again. SmolLM2-135M: 31 boundaries x 576 x 2 bytes = 36 KB per token,
so 131k tokens take 4.7 GB of disk (and only the pages in use of memory).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtc.core.errors import XtcError
from xtc.train import arch as archs

FILES = ("tokens", "hidden", "topk_ids", "topk_logits")


@dataclass
class TeacherCache:
    path: Path
    tokens: np.ndarray  # (windows, seq_len) int32
    hidden: np.ndarray  # (boundaries, windows, seq_len, width) float16
    topk_ids: np.ndarray
    topk_logits: np.ndarray
    done: int  # windows written

    @property
    def windows(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def complete(self) -> bool:
        return self.done >= self.windows

    def head(self, n: int) -> "TeacherCache":
        """The first `n` windows only (what a pass stopped by its deadline finished)."""
        return TeacherCache(self.path, self.tokens[:n], self.hidden[:, :n], self.topk_ids[:n], self.topk_logits[:n], n)

    def describe(self) -> str:
        return (f"{self.windows} windows of {self.seq_len} tokens, {self.hidden.shape[0]} boundaries, "
                f"top-{self.topk_ids.shape[-1]} logits, {disk_mb(self.path):.0f} MB")


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).glob("*.npy")) / 1e6


def _progress(path: Path) -> int:
    try:
        return int(json.loads((path / "progress.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def open_cache(path: Path) -> TeacherCache:
    """An existing cache (complete or not), memory-mapped read-write."""
    path = Path(path)
    try:
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r+") for name in FILES}
    except (OSError, ValueError) as exc:
        raise XtcError(f"{path}: unreadable teacher cache ({exc}); delete it to rebuild") from None
    return TeacherCache(path, done=_progress(path), **arrays)


def create_cache(path: Path, windows: np.ndarray, boundaries: int, width: int, topk: int) -> TeacherCache:
    """Allocate the files for `windows` (n, seq_len) token windows (filled by `fill_cache`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    n, seq = windows.shape
    shapes = {"tokens": ((n, seq), np.int32), "hidden": ((boundaries, n, seq, width), np.float16),
              "topk_ids": ((n, seq, topk), np.int32), "topk_logits": ((n, seq, topk), np.float16)}
    arrays = {name: np.lib.format.open_memmap(path / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
              for name, (shape, dtype) in shapes.items()}
    arrays["tokens"][:] = windows
    arrays["tokens"].flush()
    (path / "progress.json").write_text(json.dumps({"done": 0}))
    return TeacherCache(path, done=0, **arrays)


@torch.no_grad()
def fill_cache(cache: TeacherCache, teacher: nn.Module, batch_size: int = 4, topk: int | None = None,
               deadline: float | None = None, device: str = "cpu", progress: bool = False) -> TeacherCache:
    """Run the teacher over the windows not done yet, `batch_size` at a time, until done or the
    `deadline` (time.monotonic()). Progress is recorded after every batch, so a kill loses at most
    one batch."""
    from tqdm.auto import tqdm

    teacher = teacher.to(device).eval()
    k = topk or cache.topk_ids.shape[-1]
    bar = tqdm(total=cache.windows, initial=cache.done, desc="teacher cache", disable=not progress, dynamic_ncols=True)
    while not cache.complete:
        if deadline is not None and time.monotonic() >= deadline:
            break
        lo, hi = cache.done, min(cache.done + batch_size, cache.windows)
        ids = torch.from_numpy(np.asarray(cache.tokens[lo:hi], dtype=np.int64)).to(device)
        states, logits = archs.boundary_states(teacher, ids)
        for b, h in enumerate(states):
            cache.hidden[b, lo:hi] = h.float().cpu().numpy().astype(np.float16)
        values, indices = logits.float().topk(k, dim=-1)
        cache.topk_logits[lo:hi] = values.cpu().numpy().astype(np.float16)
        cache.topk_ids[lo:hi] = indices.cpu().numpy().astype(np.int32)
        for name in FILES[1:]:
            getattr(cache, name).flush()
        cache.done = hi
        (cache.path / "progress.json").write_text(json.dumps({"done": hi}))
        bar.update(hi - lo)
    bar.close()
    return cache


def windows_of(tokens: torch.Tensor, seq_len: int, max_windows: int | None = None) -> np.ndarray:
    """A token stream cut into consecutive windows of `seq_len` (the stream is already shuffled by
    file, so consecutive windows are as good as random ones and never overlap)."""
    n = len(tokens) // seq_len
    if n < 1:
        raise XtcError(f"corpus has {len(tokens)} tokens, fewer than --seq-len {seq_len}: add data or lower it")
    n = min(n, max_windows) if max_windows else n
    return tokens[:n * seq_len].view(n, seq_len).numpy().astype(np.int32)


def batch(array: np.ndarray, index, device: str = "cpu") -> torch.Tensor:
    """Rows of a memory-mapped array as an fp32 (or int64) tensor on `device`."""
    rows = np.asarray(array[np.sort(np.asarray(index))])
    tensor = torch.from_numpy(rows.astype(np.float32) if rows.dtype == np.float16 else rows.astype(np.int64))
    return tensor.to(device)
