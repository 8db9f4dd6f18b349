"""The workspace index: every known file cut into overlapping windows of lines, and an inverted
index from identifier to the windows holding it (with counts), so that ranking is a few vector
additions over the query's words instead of a scan of every window.

Compact on purpose (a workspace may hold 10,000 files): a window is a few integers, postings are
`array`s of 32-bit ids, each file's text is kept once. Thread-safe: the language server updates it
from its message loop and a background walk while the completion worker reads it.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections import Counter
from dataclasses import dataclass

import numpy as np

from xtc.core import defaults

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifiers(text: str) -> list[str]:
    """The identifier-like words of code, in order: what windows and queries are compared on."""
    return _IDENTIFIER.findall(text)


@dataclass(frozen=True)
class Window:
    path: str
    start: int  # first line, 0-based
    text: str


def window_starts(n_lines: int, lines: int, stride: int) -> list[int]:
    """A window every `stride` lines, the last one reaching the end of the file."""
    return list(range(0, max(1, n_lines - lines + stride), stride))


class WorkspaceIndex:
    """Windows of `lines` lines every `stride` lines of every document, by path."""

    def __init__(self, lines: int = defaults.CONTEXT_WINDOW_LINES, stride: int = defaults.CONTEXT_WINDOW_STRIDE,
                 max_line_chars: int = defaults.CONTEXT_MAX_LINE_CHARS):
        self.lines, self.stride, self.max_line_chars = lines, stride, max_line_chars
        self._lock = threading.Lock()
        self._word_ids: dict[str, int] = {}
        self._post_ids: list[array] = []  # word id -> window ids
        self._post_tf: list[array] = []  # word id -> occurrences in those windows
        self._path: list[str] = []  # window id -> path, first line, words, distinct words
        self._start = array("I")
        self._length = array("I")
        self._distinct = array("I")
        self._alive = bytearray()
        self._docs: dict[str, tuple[str, list[int]]] = {}  # path -> (text, window ids)
        self._dead = 0
        self.paths_changed = 0  # counts changes of the set of paths (not of their texts)

    # -- updates ---------------------------------------------------------------------------------
    def set_document(self, path: str, text: str) -> None:
        """Index (or re-index) one file's text."""
        rows = [row[: self.max_line_chars] for row in text.split("\n")]
        windows = []
        for start in window_starts(len(rows), self.lines, self.stride):
            counts = Counter(identifiers("\n".join(rows[start:start + self.lines])))
            if counts:
                windows.append((start, counts))
        with self._lock:
            self.paths_changed += path not in self._docs
            self._drop(path)
            ids = []
            for start, counts in windows:
                wid = len(self._path)
                self._path.append(path)
                self._start.append(start)
                self._length.append(sum(counts.values()))
                self._distinct.append(len(counts))
                self._alive.append(1)
                for word, tf in counts.items():
                    w = self._word_ids.get(word)
                    if w is None:
                        w = self._word_ids[word] = len(self._post_ids)
                        self._post_ids.append(array("I"))
                        self._post_tf.append(array("I"))
                    self._post_ids[w].append(wid)
                    self._post_tf[w].append(tf)
                ids.append(wid)
            self._docs[path] = ("\n".join(rows), ids)
            if self._dead > 100_000 and self._dead > len(self._path) // 2:
                self._compact()

    def remove(self, path: str) -> None:
        with self._lock:
            self.paths_changed += path in self._docs
            self._drop(path)

    def _drop(self, path: str) -> None:
        _, ids = self._docs.pop(path, ("", []))
        for wid in ids:
            self._alive[wid] = 0
        self._dead += len(ids)

    def _compact(self) -> None:
        """Renumber the live windows and drop dead postings (after many re-indexed files)."""
        alive = np.frombuffer(bytes(self._alive), dtype=np.uint8).astype(bool)
        new_id = np.cumsum(alive) - 1
        for w in range(len(self._post_ids)):
            ids = np.array(self._post_ids[w], dtype=np.int64)
            keep = alive[ids] if len(ids) else np.zeros(0, dtype=bool)
            self._post_ids[w] = array("I", new_id[ids[keep]].astype(np.uint32).tobytes())
            self._post_tf[w] = array("I", np.array(self._post_tf[w], dtype=np.uint32)[keep].tobytes())
        self._path = [p for p, a in zip(self._path, alive) if a]
        for name in ("_start", "_length", "_distinct"):
            values = np.array(getattr(self, name), dtype=np.uint32)[alive]
            setattr(self, name, array("I", values.tobytes()))
        self._alive = bytearray(b"\x01" * len(self._path))
        self._docs = {p: (text, [int(new_id[i]) for i in ids]) for p, (text, ids) in self._docs.items()}
        self._dead = 0

    # -- reading ---------------------------------------------------------------------------------
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._docs)

    def __len__(self) -> int:  # live windows
        return len(self._path) - self._dead

    def text(self, path: str) -> str | None:
        with self._lock:
            doc = self._docs.get(path)
        return doc[0] if doc else None

    def window(self, wid: int) -> Window:
        with self._lock:
            path, start = self._path[wid], self._start[wid]
            text = self._docs[path][0]
        rows = text.split("\n")[start:start + self.lines]
        return Window(path, start, "\n".join(rows).rstrip())

    def statistics(self, words: list[str]) -> dict:
        """What a ranking needs, copied under the lock: for each known word of `words` its postings
        (window ids, counts) as arrays; every window's length, distinct words and liveness."""
        with self._lock:
            postings = {}
            for word in words:
                w = self._word_ids.get(word)
                if w is not None:
                    postings[word] = (np.array(self._post_ids[w], dtype=np.int64), np.array(self._post_tf[w], dtype=np.float32))
            return {"postings": postings, "length": np.array(self._length, dtype=np.float32),
                    "distinct": np.array(self._distinct, dtype=np.float32),
                    "alive": np.frombuffer(bytes(self._alive), dtype=np.uint8).astype(bool),
                    "paths": self._path, "live": len(self._path) - self._dead}
