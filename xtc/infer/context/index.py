"""The workspace index: every known file cut into overlapping windows of lines, each with the
identifiers it holds, and an inverted index from identifier to windows so that ranking touches
only windows sharing a word with the query.

Thread-safe: the language server updates it from its message loop and a background walk while
the completion worker reads it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass

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
    counts: Counter  # identifier -> occurrences (BM25)

    @property
    def words(self) -> set[str]:  # Jaccard's bag of words
        return set(self.counts)


def windows_of(path: str, text: str, lines: int = defaults.CONTEXT_WINDOW_LINES,
               stride: int = defaults.CONTEXT_WINDOW_STRIDE,
               max_line_chars: int = defaults.CONTEXT_MAX_LINE_CHARS) -> list[Window]:
    """`text` cut into windows of `lines` lines, one starting every `stride` lines (the last one
    reaching the end), blank-only windows left out."""
    rows = [row[:max_line_chars] for row in text.split("\n")]
    starts = list(range(0, max(1, len(rows) - lines + stride), stride))
    found = []
    for start in starts:
        chunk = "\n".join(rows[start:start + lines]).rstrip()
        words = identifiers(chunk)
        if words:
            found.append(Window(path, start, chunk, Counter(words)))
    return found


class WorkspaceIndex:
    """The windows of every document, by path; `postings` maps an identifier to window ids."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[int, Window] = {}
        self._by_path: dict[str, list[int]] = {}
        self._postings: dict[str, set[int]] = {}
        self._total_words = 0  # for BM25's mean window length
        self._next = 0

    def set_document(self, path: str, text: str) -> None:
        """Index (or re-index) one file's text."""
        new = windows_of(path, text)
        with self._lock:
            self._drop(path)
            ids = []
            for window in new:
                wid, self._next = self._next, self._next + 1
                self._windows[wid] = window
                self._total_words += sum(window.counts.values())
                for word in window.counts:
                    self._postings.setdefault(word, set()).add(wid)
                ids.append(wid)
            self._by_path[path] = ids

    def remove(self, path: str) -> None:
        with self._lock:
            self._drop(path)

    def _drop(self, path: str) -> None:
        for wid in self._by_path.pop(path, ()):
            window = self._windows.pop(wid)
            self._total_words -= sum(window.counts.values())
            for word in window.counts:
                ids = self._postings[word]
                ids.discard(wid)
                if not ids:
                    del self._postings[word]

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._by_path)

    def __len__(self) -> int:  # windows
        return len(self._windows)

    def candidates(self, words: set[str], max_postings: int = 2000) -> tuple[dict[int, Window], dict[str, int], int, float]:
        """What a ranking needs, copied under the lock: the windows sharing a distinctive word with
        `words` (a word in more than `max_postings` windows, like `self`, finds none by itself:
        scanning its windows would cost more than it ranks), the document frequency of each of
        `words`, the window count and the mean window length (in words)."""
        with self._lock:
            df = {w: len(self._postings[w]) for w in words if w in self._postings}
            rare = [w for w in df if df[w] <= max_postings] or sorted(df, key=df.get)[:1]
            ids = set().union(*(self._postings[w] for w in rare)) if rare else set()
            windows = {i: self._windows[i] for i in ids}
            n = len(self._windows)
            mean = self._total_words / n if n else 0.0
        return windows, df, n, mean
