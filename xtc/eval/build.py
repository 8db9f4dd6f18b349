"""Building the random-cut line-level benchmark, the CodeXGLUE way: deterministic for a seed, so
that a results table can name the exact file it was measured on (rules: benchmarks/data/README.md)."""

from __future__ import annotations

import io
import keyword
import os
import random
import re
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xtc.core.errors import XtcError
from xtc.eval.metrics import LAYOUT

# --- what a source file must look like to be sampled -------------------------------------------

#: Directory names never walked: tests and their data (lib2to3/tests/data holds deliberately
#: broken Python), installed third-party code (the training corpus lives in site-packages, so the
#: benchmark must never see it), caches and VCS/virtual-env folders.
EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "node_modules",
    }
)
#: Files shorter than this have too little context to be worth a cut.
MIN_FILE_CHARS = 500
#: Files longer than this are data dumps (e.g. pydoc_data/topics.py), not code people write.
MAX_FILE_CHARS = 300_000
#: A line longer than this marks a minified or data-table file.
MAX_LINE_CHARS = 1000
#: A marker of generated code in the first lines (codec tables, Sphinx dumps, sysconfig data).
GENERATED = re.compile(r"auto-?generated|generated (by|from|with|and)|do not edit", re.IGNORECASE)
GENERATED_HEAD_LINES = 10

#: Token types that never start a cut: there is no "rest of the line" to predict after them.
_NO_CUT = frozenset(
    {
        tokenize.NEWLINE,
        tokenize.NL,
        tokenize.COMMENT,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)
#: Token types the metrics ignore: layout only, never something a completion must type.


@dataclass(frozen=True)
class Cut:
    """A cut point in a file: `offset` is where the cursor sits, `line_end` where its line ends."""

    offset: int
    line_end: int
    row: int


@dataclass
class _Source:
    """A sampled file, its cut points and the ones already used (so an item never repeats)."""

    name: str
    text: str
    cuts: list[Cut]
    shape: int
    used: set[int] = field(default_factory=set)


def python_files(sources: Sequence[Path]) -> list[tuple[Path, str]]:
    """Every `.py` file under the sources as (path, name relative to its source), sorted.

    Sorted walks with pruned directories keep the list identical from run to run and machine to
    machine, which is what makes a seed reproduce the same benchmark. Symlinked folders are not
    followed (no cycles, no escaping the given tree). A single file may be given as a source.
    """
    found: list[tuple[Path, str]] = []
    for source in sources:
        source = Path(source)
        if source.is_file():
            if source.suffix == ".py":
                found.append((source, source.name))
            continue
        if not source.is_dir():
            raise XtcError(f"{source}: no such directory")
        found.extend(_walk(source))
    return found


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """The sorted `.py` files under `root`, skipping excluded and hidden directories."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("."))
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                path = Path(dirpath) / filename
                yield path, path.relative_to(root).as_posix()


def read_source(path: Path) -> str | None:
    """The file's text (UTF-8, BOM dropped, newlines normalised to "\\n"), or None to skip it.

    Skipped: undecodable files (other PEP 263 encodings are rare and not worth the complexity),
    files too small to give context or too big to be hand-written code, files with very long lines
    (data tables) and files that announce they are generated.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not MIN_FILE_CHARS <= len(text) <= MAX_FILE_CHARS:
        return None
    lines = text.split("\n")
    if max(map(len, lines)) > MAX_LINE_CHARS:
        return None
    if GENERATED.search("\n".join(lines[:GENERATED_HEAD_LINES])):
        return None
    return text


def cut_points(text: str, min_input_chars: int = 0) -> list[Cut]:
    """Every admissible cut of a file, in order; empty when the file does not tokenize cleanly.

    A cut sits at the start of a token that is code (not a comment, newline or indentation), with
    at least `min_input_chars` before it, on a physical line whose remaining tokens all end on that
    line (so `gt` never stops inside a triple-quoted string), that does not continue with a
    backslash, and whose rest holds at least one letter, digit or underscore (a lone `)` or `]:`
    is free for every model and would only compress the range of scores).
    """
    tokens = _tokens(text)
    return [] if tokens is None else _cuts_from_tokens(text, tokens, min_input_chars)


def _tokens(text: str) -> list[tokenize.TokenInfo] | None:
    """All tokens of a file, or None when it is not clean Python for this interpreter."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    if any(tok.type == tokenize.ERRORTOKEN for tok in tokens):
        return None
    return tokens


def _cuts_from_tokens(text: str, tokens: list[tokenize.TokenInfo], min_input_chars: int) -> list[Cut]:
    """The cut rules of `cut_points`, applied to an already tokenized file."""
    starts = _line_starts(text)
    spills = {tok.start[0] for tok in tokens if tok.end[0] > tok.start[0] and tok.type not in LAYOUT}
    cuts: list[Cut] = []
    for tok in tokens:
        row, col = tok.start
        if tok.type in _NO_CUT or row in spills:
            continue
        offset = starts[row - 1] + col
        line_end = _line_end(text, offset)
        gt = text[offset:line_end].rstrip()
        if offset < min_input_chars or gt.endswith("\\") or not re.search(r"\w", gt):
            continue
        cuts.append(Cut(offset=offset, line_end=line_end, row=row))
    return cuts


def shape(tokens: list[tokenize.TokenInfo]) -> int:
    """A fingerprint of a file's structure: its tokens with names, literals and comments erased.

    Template-cloned modules (the stdlib's dozens of CJK codec shims, each differing only in a
    codec name) share a shape; sampling one of them is enough, or they would fill the benchmark
    with near-duplicates that reward memorising boilerplate.
    """
    erased = (tokenize.NAME, tokenize.STRING, tokenize.NUMBER)
    return hash(
        tuple(
            (tok.type, "" if tok.type in erased and not keyword.iskeyword(tok.string) else tok.string)
            for tok in tokens
            if tok.type not in LAYOUT and tok.type != tokenize.COMMENT
        )
    )


def _line_starts(text: str) -> list[int]:
    """Offsets at which each "\\n"-separated line starts (tokenize rows count from 1)."""
    starts = [0]
    starts.extend(i + 1 for i, char in enumerate(text) if char == "\n")
    return starts


def _line_end(text: str, offset: int) -> int:
    """Offset of the "\\n" ending the line that holds `offset` (or the end of the text)."""
    end = text.find("\n", offset)
    return len(text) if end < 0 else end


def make_item(
    text: str,
    cut: Cut,
    name: str,
    max_input_chars: int | None = None,
    max_suffix_chars: int | None = None,
) -> dict:
    """The benchmark item for one cut, with `input` and `suffix` bounded to whole lines.

    `input` keeps at most the last `max_input_chars` characters, starting at a line start so the
    model never sees half a line; `suffix` keeps at most `max_suffix_chars`, ending at a line end.
    """
    return {
        "input": _tail_lines(text[: cut.offset], max_input_chars),
        "gt": text[cut.offset : cut.line_end].rstrip(),
        "suffix": _head_lines(text[cut.line_end + 1 :], max_suffix_chars),
        "path": name,
        "source": f"{name}:{cut.row}",
    }


def _tail_lines(text: str, limit: int | None) -> str:
    """At most the last `limit` characters of `text`, dropping a leading partial line."""
    if limit is None or len(text) <= limit:
        return text
    tail = text[len(text) - limit :]
    newline = tail.find("\n")
    return tail[newline + 1 :] if newline >= 0 else tail


def _head_lines(text: str, limit: int | None) -> str:
    """At most the first `limit` characters of `text`, dropping a trailing partial line."""
    if limit is None or len(text) <= limit:
        return text
    head = text[:limit]
    newline = head.rfind("\n")
    return head[: newline + 1] if newline >= 0 else head


def build_benchmark(
    sources: list[Path],
    n: int,
    seed: int,
    *,
    min_input_chars: int = 200,
    max_input_chars: int | None = 4000,
    max_suffix_chars: int | None = 1000,
) -> list[dict]:
    """Sample `n` items (fewer only if the sources run out of distinct cuts), reproducibly.

    The files are shuffled with `random.Random(seed)` and visited in rounds: each visit takes one
    new cut, uniformly among the file's unused cut points. A file whose `shape` matches one
    already visited is skipped as a near-duplicate. With more usable files than `n` (the
    standard library has ~800) every item comes from a different file, as in CodeXGLUE, so no
    single large module dominates. Defaults bound an item to ~5 KB: prompt windows of the models
    we serve are shorter than 4000 characters anyway.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    files = python_files(sources)
    rng.shuffle(files)
    loaded: dict[int, _Source] = {}
    shapes: set[int] = set()
    pending = list(range(len(files)))  # files still able to give a new cut, in visiting order
    items: list[dict] = []
    while len(items) < n and pending:
        still = []
        for index in pending:
            if len(items) >= n:
                break
            source = loaded.get(index)
            if source is None:
                source = _load(files[index], min_input_chars)
                if source is None or source.shape in shapes:
                    continue
                shapes.add(source.shape)
                loaded[index] = source
            items.append(_take_cut(source, rng, max_input_chars, max_suffix_chars))
            if len(source.used) < len(source.cuts):
                still.append(index)
        pending = still
    return items


def _load(file: tuple[Path, str], min_input_chars: int) -> _Source | None:
    """The file with its cut points, or None when it is skipped or has no admissible cut."""
    path, name = file
    text = read_source(path)
    tokens = None if text is None else _tokens(text)
    if text is None or tokens is None:
        return None
    cuts = _cuts_from_tokens(text, tokens, min_input_chars)
    return _Source(name=name, text=text, cuts=cuts, shape=shape(tokens)) if cuts else None


def _take_cut(
    source: _Source, rng: random.Random, max_input_chars: int | None, max_suffix_chars: int | None
) -> dict:
    """Draw one unused cut of `source` and turn it into an item."""
    free = [i for i in range(len(source.cuts)) if i not in source.used]
    choice = rng.choice(free)
    source.used.add(choice)
    return make_item(source.text, source.cuts[choice], source.name, max_input_chars, max_suffix_chars)
