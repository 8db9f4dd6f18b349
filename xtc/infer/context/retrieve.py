"""Ranking the index's windows against the lines before the cursor: RepoCoder's Jaccard over
bags of identifiers, or BM25 (CrossCodeEval's retriever), both over the same identifiers."""

from __future__ import annotations

from collections import Counter

import numpy as np

from xtc.core import defaults
from xtc.infer.context.index import Window, WorkspaceIndex, identifiers

RETRIEVERS = defaults.CONTEXT_RETRIEVERS
BM25_K1, BM25_B = 1.2, 0.75  # the usual constants (Robertson & Zaragoza)


def rank(index: WorkspaceIndex, query_text: str, *, exclude_path: str = "", retriever: str = defaults.CONTEXT_RETRIEVER,
         near_copy: float = defaults.CONTEXT_NEAR_COPY, limit: int = 20) -> list[tuple[float, Window]]:
    """The best `limit` windows for `query_text`, best first, leaving out the current file's own
    windows (`exclude_path`: they hold what is around the cursor, or in `xtc eval` the answer) and
    windows that nearly copy the query (llama.vscode drops those: the model would repeat them)."""
    if retriever not in RETRIEVERS:
        raise ValueError(f"retriever {retriever!r}: expected one of {', '.join(RETRIEVERS)}")
    query = Counter(identifiers(query_text))
    if not query:
        return []
    stats = index.statistics(list(query))
    alive, n = stats["alive"], max(1, stats["live"])
    shared = np.zeros(len(alive), dtype=np.float32)  # distinct query words in each window
    bm25 = np.zeros(len(alive), dtype=np.float32)
    mean_length = float(stats["length"][alive].mean()) if alive.any() else 1.0
    norm = BM25_K1 * (1 - BM25_B + BM25_B * stats["length"] / max(mean_length, 1.0))
    for word, (ids, tf) in stats["postings"].items():
        live = alive[ids]
        ids, tf = ids[live], tf[live]
        if not len(ids):
            continue
        shared[ids] += 1
        df = len(ids)
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        bm25[ids] += idf * tf * (BM25_K1 + 1) / (tf + norm[ids])
    jaccard = shared / np.maximum(len(query) + stats["distinct"] - shared, 1)
    score = jaccard if retriever == "jaccard" else bm25
    candidates = np.flatnonzero((shared > 0) & alive & (jaccard < near_copy))
    paths = stats["paths"]
    candidates = [int(i) for i in candidates if paths[i] != exclude_path]
    # Best first; ties in a stable, reproducible order (path, line).
    best = sorted(candidates, key=lambda i: -float(score[i]))[: limit * 4]
    windows = [(float(score[i]), index.window(i)) for i in best]
    windows.sort(key=lambda sw: (-sw[0], sw[1].path, sw[1].start))
    return windows[:limit]
