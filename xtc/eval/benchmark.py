"""The benchmark file: JSON Lines of `{"input", "gt"}` with optional `suffix` (the code after the
cursor's line), `path` (the item's file relative to a workspace root) and `source`."""

from __future__ import annotations

import json
from pathlib import Path

from xtc.core.errors import XtcError


def editor_view(item: dict) -> tuple[str, str]:
    """(before, after): the document around the item's cursor as an editor sends it. The cursor's
    line ends there (its rest is the answer), so the text after the cursor starts with the newline
    that ends it, then `suffix`; without a `suffix` nothing is known after the cursor."""
    suffix = item.get("suffix")
    return item["input"], "" if suffix is None else "\n" + suffix


def write_benchmark(items: list[dict], path: Path) -> None:
    """Write items as JSON Lines (UTF-8, one object per line, parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")


def load_benchmark(path: Path) -> list[dict]:
    """Read and validate a benchmark file; any defect is an `XtcError` naming file and line.

    Lines are split on "\\n" only: JSON escapes every other control character, but U+2028 and
    friends may appear raw inside strings and must not be taken for line breaks. Blank lines are
    skipped; unknown keys are kept (the format may grow).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise XtcError(f"{path}: no such benchmark file") from None
    except IsADirectoryError:
        raise XtcError(f"{path}: is a directory, expected a .jsonl benchmark file") from None
    except OSError as exc:
        raise XtcError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise XtcError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    items = [
        _parse_item(line, path, number)
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    if not items:
        raise XtcError(f"{path}: empty benchmark file")
    return items


def _parse_item(line: str, path: Path, number: int) -> dict:
    """One validated item: an object with string `input` and `gt`, optionally string `suffix` and `path`."""
    where = f"{path}:{number}"
    try:
        item = json.loads(line)
    except ValueError as exc:
        message = getattr(exc, "msg", str(exc))
        raise XtcError(f"{where}: not valid JSON ({message})") from None
    if not isinstance(item, dict):
        raise XtcError(f"{where}: expected a JSON object, got {type(item).__name__}")
    for key in ("input", "gt"):
        if key not in item:
            raise XtcError(f"{where}: missing \"{key}\"")
    for key in ("input", "gt", "suffix", "path"):
        if key in item and not isinstance(item[key], str):
            raise XtcError(f"{where}: \"{key}\" must be a string, got {type(item[key]).__name__}")
    return item
