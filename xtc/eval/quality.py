"""Scoring a completer on a benchmark. Nothing here knows about models: `evaluate` takes a plain
`complete_fn(before, after, path)` returning the suggestion (a string, or a `Completion`), given what an editor would have at the item's cursor."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from xtc.eval.benchmark import editor_view
from xtc.eval.metrics import first_line, score_predictions
from xtc.eval.predictions import _appender, _reusable_rows, prediction_row, read_predictions, shard_indices


def evaluate(
    complete_fn: Callable[[str, str, str], str],
    items: list[dict],
    limit: int | None = None,
    progress: bool = True,
    *,
    shard: tuple[int, int] | None = None,
    predictions: Path | None = None,
    model: str | None = None,
) -> dict:
    """Score `complete_fn(before, after, path)` on the first `limit` items (all when None): the
    text before and after the cursor as the editor has them (`editor_view`) and the item's `path`.

    `shard=(K, N)` keeps shard K of N of those items (`shard_indices`). `predictions`: a JSON
    Lines file that gets one row per item as soon as it is predicted (`prediction_row`); items
    already in it are not predicted again, so a killed evaluation continues where it stopped, and
    the shards' files merge into the full result (`merge_predictions`).

    Returns the `score_predictions` metrics plus `seconds`: the wall time spent in the loop
    (completion calls included), plus the recorded time of the items taken from `predictions`.
    Progress goes to stderr so that `xtc eval --json` keeps stdout a single JSON object.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    n = len(items) if limit is None else min(limit, len(items))
    chosen = shard_indices(n, *shard) if shard else list(range(n))
    done = {}
    if predictions is not None:
        done = _reusable_rows(read_predictions(predictions), items, chosen, model, predictions)
    todo = [i for i in chosen if i not in done]
    reused = [i for i in chosen if i in done]
    writer = _appender(predictions) if predictions is not None and todo else None
    desc = f"eval {shard[0]}/{shard[1]}" if shard else "eval"
    start = time.perf_counter()
    try:
        for i in tqdm(todo, desc=desc, unit="item", file=sys.stderr, disable=not progress):
            t = time.perf_counter()
            answer = complete_fn(*editor_view(items[i]), items[i].get("path", ""))
            pred = first_line(answer if isinstance(answer, str) else answer.text)
            done[i] = prediction_row(i, items[i], pred, time.perf_counter() - t, model)
            if hasattr(answer, "mean_logprob"):  # how sure the model was: for choosing what to show
                done[i]["mean_logprob"] = round(answer.mean_logprob, 4)
            if getattr(answer, "steered", False):  # a workspace module's member name replaced the model's choice
                done[i]["steered"] = True
            if writer is not None:
                writer.write(json.dumps(done[i], ensure_ascii=False) + "\n")
                writer.flush()
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start + sum(done[i]["seconds"] for i in reused)
    result = score_predictions([done[i]["prediction"] for i in chosen], [items[i]["gt"] for i in chosen])
    result["seconds"] = seconds
    return result
