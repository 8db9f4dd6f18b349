"""Ranking the index's windows against the lines before the cursor: RepoCoder's Jaccard over
bags of identifiers, or BM25 (CrossCodeEval's retriever), both over the same identifiers."""

from __future__ import annotations

import math
from collections import Counter

from xtc.core import defaults
from xtc.infer.context.index import Window, WorkspaceIndex, identifiers

RETRIEVERS = ("bm25", "jaccard")
BM25_K1, BM25_B = 1.2, 0.75  # the usual constants (Robertson & Zaragoza)


def jaccard(query: set[str], window: Window) -> float:
    words = window.words
    union = len(query | words)
    return len(query & words) / union if union else 0.0


def bm25(query: Counter, window: Window, df: dict[str, int], n: int, mean_length: float) -> float:
    length = sum(window.counts.values())
    score = 0.0
    for word in query:
        tf = window.counts.get(word, 0)
        if tf:
            idf = math.log(1 + (n - df[word] + 0.5) / (df[word] + 0.5))
            score += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / (mean_length or 1)))
    return score


def rank(index: WorkspaceIndex, query_text: str, *, exclude_path: str = "", retriever: str = defaults.CONTEXT_RETRIEVER,
         near_copy: float = defaults.CONTEXT_NEAR_COPY, limit: int = 20) -> list[tuple[float, Window]]:
    """The best `limit` windows for `query_text`, best first, leaving out the current file's own
    windows (`exclude_path`: they hold what is around the cursor, or in `xtc eval` the answer) and
    windows that nearly copy the query (llama.vscode drops those: the model would repeat them)."""
    if retriever not in RETRIEVERS:
        raise ValueError(f"retriever {retriever!r}: expected one of {', '.join(RETRIEVERS)}")
    counts = Counter(identifiers(query_text))
    if not counts:
        return []
    words = set(counts)
    windows, df, n, mean = index.candidates(words)
    scored = []
    for window in windows.values():
        if window.path == exclude_path:
            continue
        similarity = jaccard(words, window)
        if similarity >= near_copy:
            continue
        score = similarity if retriever == "jaccard" else bm25(counts, window, df, n, mean)
        if score > 0:
            scored.append((score, window))
    scored.sort(key=lambda sw: (-sw[0], sw[1].path, sw[1].start))  # ties: a stable, reproducible order
    return scored[:limit]
