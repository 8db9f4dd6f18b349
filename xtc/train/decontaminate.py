"""Keep benchmark items out of the training corpus.

The benchmark is cut from real files (the standard library), and site-packages vendors copies of
standard-library modules (setuptools' distutils, back-ports, pip's vendored packages). A training
file that holds a benchmark item teaches the model the answer, so the corpus builder drops it.

An item is recognised by a window of `WINDOW` consecutive non-empty lines: the item's cut line
(the input's last, partial line + `gt`) and the non-empty lines just before it. A file holds the
item when those lines appear in it in that order, blank lines and whitespace aside (lines are
compared with their spaces and tabs removed). Matching works on the file's bytes with C-level
operations only (delete whitespace, split lines, one set intersection with the items' cut lines,
and a substring search in the rare files that share a cut line), so a whole site-packages takes
seconds (docs/pipeline.md, "Costs of the corpus and packing steps").

Torch-free: only the benchmark reader of `xtc.eval.benchmark` is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

WINDOW = 3  # non-empty lines per key: the cut line and the two before it
_WHITESPACE = b" \t\r\f\v"  # removed from every line before comparing (the line break stays)


def _compact(text: str | bytes) -> bytes:
    """UTF-8 bytes of `text` with spaces, tabs and carriage returns removed (line breaks kept)."""
    data = text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else text
    return data.translate(None, _WHITESPACE)


@dataclass(frozen=True)
class ItemKeys:
    """What identifies a set of benchmark items in a file."""

    windows: dict[bytes, frozenset[bytes]]  # cut line -> the items' windows ending with it ("\n"-joined)
    items: int  # items given
    source: str = ""  # where the items came from, for messages

    def __len__(self) -> int:
        return sum(len(w) for w in self.windows.values())


def item_keys(items: Iterable[dict], window: int = WINDOW, source: str = "") -> ItemKeys:
    """The keys of benchmark items (`{"input", "gt"}`). An item with fewer than `window` non-empty
    lines up to its cut gets no key (`xtc build-benchmark` gives every item at least 200
    characters of input, so in the shipped benchmark 1 item of 500 has none)."""
    windows: dict[bytes, set[bytes]] = {}
    n = 0
    for item in items:
        n += 1
        before = item["input"].split("\n")
        cut_line = _compact(before[-1] + item["gt"])
        previous = [x for x in _compact("\n".join(before[:-1])).split(b"\n") if x][-(window - 1):] if window > 1 else []
        lines = previous + [cut_line]
        if cut_line and len(lines) == window:
            windows.setdefault(cut_line, set()).add(b"\n".join(lines))
    return ItemKeys({k: frozenset(v) for k, v in windows.items()}, n, source)


def holds_item(text: str | bytes, keys: ItemKeys) -> bool:
    """Whether `text` holds one of the items' windows of lines."""
    lines = _compact(text).split(b"\n")
    hits = keys.windows.keys() & set(lines)
    if not hits:
        return False
    body = b"\n" + b"\n".join(filter(None, lines)) + b"\n"
    return any(b"\n" + w + b"\n" in body for cut in hits for w in keys.windows[cut])


def file_holds_item(path: Path, keys: ItemKeys) -> bool:
    """`holds_item` on a file (an unreadable file counts as holding one, so that it is left out)."""
    try:
        return holds_item(Path(path).read_bytes(), keys)
    except OSError:
        return True


def benchmark_keys(exclude: str | Path | Sequence[dict] | ItemKeys) -> ItemKeys:
    """Keys from a benchmark file (JSON Lines, read by `xtc.eval.benchmark.load_benchmark`), a list
    of items, or keys already made."""
    if isinstance(exclude, ItemKeys):
        return exclude
    if isinstance(exclude, (str, Path)):
        from xtc.eval.benchmark import load_benchmark

        return item_keys(load_benchmark(Path(exclude)), source=Path(exclude).name)
    if isinstance(exclude, Sequence):
        return item_keys(exclude, source=f"{len(exclude)} benchmark items")
    raise TypeError(f"cannot exclude benchmark items given as {type(exclude).__name__}")


def split_contaminated(files: Sequence[Path], keys: ItemKeys) -> tuple[list[Path], list[Path]]:
    """(clean files, files holding a benchmark item), each in the given order."""
    clean, dropped = [], []
    for path in files:
        (dropped if file_holds_item(path, keys) else clean).append(path)
    return clean, dropped
