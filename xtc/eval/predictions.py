"""Prediction files: one JSON line per predicted item, so that a killed evaluation resumes and
the shards of one evaluation merge into the full result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from xtc.core.errors import XtcError
from xtc.eval.metrics import edit_similarity, exact_match, score_predictions


def shard_indices(n: int, shard: int, shards: int) -> list[int]:
    """The item indices of shard `shard` of `shards` (1-based, `--shard K/N`) among the first `n`:
    interleaved, i % N == K - 1, so that every shard gets a like mix of the set and shards cut
    short still cover the whole range evenly."""
    if not 1 <= shard <= shards:
        raise ValueError(f"shard {shard} of {shards}: K must be in 1..N")
    return list(range(shard - 1, n, shards))



def prediction_row(index: int, item: dict, prediction: str, seconds: float, model: str | None = None) -> dict:
    """One line of a predictions file: the item's index in the benchmark, the end of its input
    (the cut line up to the cursor, for reading), `gt`, the prediction, its EM (bool) and ES, the
    seconds it took, and the model when known."""
    row = {"index": index, "input_tail": item["input"].rsplit("\n", 1)[-1][-200:], "gt": item["gt"],
           "prediction": prediction, "em": exact_match(prediction, item["gt"]),
           "es": edit_similarity(prediction, item["gt"]), "seconds": round(seconds, 4)}
    if model is not None:
        row["model"] = model
    return row


def read_predictions(path: Path) -> list[dict]:
    """The rows of a predictions file ([] when it does not exist). A last line cut short by a
    kill is ignored; any other malformed line is an `XtcError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise XtcError(f"{path}: cannot read predictions ({exc.__class__.__name__})") from None
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = (isinstance(row, dict) and isinstance(row.get("index"), int) and isinstance(row.get("gt"), str)
                  and isinstance(row.get("prediction"), str))
        except ValueError:
            ok = False
        if not ok:
            if number == len(lines):  # no newline after it: a write cut short
                continue
            raise XtcError(f"{path}:{number}: not a predictions line (index, gt, prediction)")
        rows.append(row)
    return rows


def _reusable_rows(rows: list[dict], items: list[dict], chosen: list[int], model: str | None, path: Path) -> dict:
    """The rows of `chosen` items, checked against the benchmark and the model."""
    wanted, done = set(chosen), {}
    for row in rows:
        i = row["index"]
        if not 0 <= i < len(items) or row["gt"] != items[i]["gt"]:
            raise XtcError(f"{path}: item {i} is not this benchmark's (other benchmark? pick another --predictions)")
        if model is not None and row.get("model", model) != model:
            raise XtcError(f"{path} holds predictions of {row['model']}, not {model}: pick another --predictions")
        if i in wanted:
            done.setdefault(i, {**row, "seconds": float(row.get("seconds", 0.0))})
    return done


def _appender(path: Path):
    """`path` opened for appending, after cutting a last line that a kill left unfinished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    return path.open("a", encoding="utf-8", newline="\n")


def merge_predictions(paths: Sequence[Path], items: list[dict] | None = None, limit: int | None = None) -> dict:
    """The result of a full evaluation from the predictions files of its shards (or of resumed
    runs): `{"model", "n", "exact_match", "edit_similarity", "score", "seconds"}`, `seconds` the
    sum of the items' recorded times. With the benchmark's `items`, every one of the first `limit`
    must be there and match; without, the rows are scored as they are."""
    rows: dict[int, tuple[dict, Path]] = {}
    for path in paths:
        if not Path(path).exists():
            raise XtcError(f"{path}: no such predictions file")
        for row in read_predictions(path):
            i = row["index"]
            if limit is not None and i >= limit:
                continue
            if i in rows and rows[i][0]["prediction"] != row["prediction"]:
                raise XtcError(f"item {i} has different predictions in {rows[i][1]} and {path}")
            rows.setdefault(i, (row, Path(path)))
    if items is not None:
        n = len(items) if limit is None else min(limit, len(items))
        missing = [i for i in range(n) if i not in rows]
        if missing:
            raise XtcError(f"{len(missing)} of {n} items have no prediction (first: {', '.join(map(str, missing[:5]))})"
                           ": finish the shards first")
        for i, (row, path) in rows.items():
            if i >= len(items) or row["gt"] != items[i]["gt"]:
                raise XtcError(f"{path}: item {i} is not this benchmark's")
    models = {row.get("model") for row, _ in rows.values()} - {None}
    if len(models) > 1:
        raise XtcError(f"predictions of different models: {', '.join(sorted(models))}")
    chosen = sorted(rows)
    result = {"model": models.pop() if models else None,
              **score_predictions([rows[i][0]["prediction"] for i in chosen], [rows[i][0]["gt"] for i in chosen])}
    result["seconds"] = sum(float(rows[i][0].get("seconds", 0.0)) for i in chosen)
    return result
