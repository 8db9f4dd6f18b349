"""Line-level code completion benchmark, built and scored like CodeXGLUE's.

An item is `{"input": code before the cursor, "gt": rest of that line, "suffix": code after the
line, "source": "file.py:LINE"}` (README, "Benchmark"). Building is deterministic for a seed so
that a results table can name the exact file it was measured on. Scoring normalises both sides to
Python tokens so that spacing differences (`foo(a,b)` vs `foo(a, b)`) never count as errors, which
is what makes scores comparable with the published CodeXGLUE numbers.

Nothing here knows about models: `evaluate` takes a plain `complete_fn(input, suffix) -> str`.
"""

from __future__ import annotations

import io
import json
import keyword
import os
import random
import re
import sys
import time
import tokenize
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz import fuzz
from tqdm import tqdm

from xtc.core.errors import XtcError

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
_LAYOUT = frozenset(
    {
        tokenize.NEWLINE,
        tokenize.NL,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)


# --- metrics ----------------------------------------------------------------------------------


def normalize(code: str) -> str:
    """Python tokens of `code` joined by single spaces (layout tokens dropped, comments kept).

    Completions and ground truths are single, often incomplete lines: `foo(a, b` or
    `'''Return the`. `tokenize.generate_tokens` yields tokens lazily and only fails when it
    reaches the problem, so we keep every token produced before the error and split the text
    after the last good token on whitespace. An unclosed bracket thus still normalises to its
    real tokens, and an unterminated string keeps its words instead of vanishing (which would make
    an empty prediction "match" it).
    """
    tokens: list[str] = []
    lines = io.StringIO(code).readlines()  # the same rows tokenize counts
    consumed = (1, 0)  # (row, col) just after the last token kept
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in _LAYOUT or not tok.string.strip():
                continue
            tokens.append(tok.string)
            consumed = tok.end
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        rest = _text_after(lines, consumed)
        tokens.extend(rest.split())
    return " ".join(tokens)


def _text_after(lines: list[str], position: tuple[int, int]) -> str:
    """The text of `lines` from a tokenize (row, col) position (rows count from 1) to the end."""
    row, col = position
    if row > len(lines):
        return ""
    return lines[row - 1][col:] + "".join(lines[row:])


def exact_match(pred: str, gt: str) -> bool:
    """CodeXGLUE EM: the normalised prediction equals the normalised ground truth."""
    return normalize(pred) == normalize(gt)


def edit_similarity(pred: str, gt: str) -> float:
    """CodeXGLUE ES: Levenshtein ratio of the normalised strings, 0-100 (rapidfuzz `fuzz.ratio`).

    Two empty strings are identical (100), an empty string against anything else scores 0.
    """
    return float(fuzz.ratio(normalize(pred), normalize(gt)))


def score_predictions(preds: Sequence[str], gts: Sequence[str]) -> dict:
    """`{"n", "exact_match", "edit_similarity", "score"}`; EM and ES in percent, score their mean.

    An empty set scores 0 rather than raising, so `--limit 0` still prints a well-formed result.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
    n = len(gts)
    if n == 0:
        return {"n": 0, "exact_match": 0.0, "edit_similarity": 0.0, "score": 0.0}
    em = 100.0 * sum(exact_match(p, g) for p, g in zip(preds, gts)) / n
    es = sum(edit_similarity(p, g) for p, g in zip(preds, gts)) / n
    return {"n": n, "exact_match": em, "edit_similarity": es, "score": (em + es) / 2}


def first_line(text: str) -> str:
    """The prediction up to its first line break: the benchmark asks for the rest of one line."""
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


def shard_indices(n: int, shard: int, shards: int) -> list[int]:
    """The item indices of shard `shard` of `shards` (1-based, `--shard K/N`) among the first `n`:
    interleaved, i % N == K - 1, so that every shard gets a like mix of the set and shards cut
    short still cover the whole range evenly."""
    if not 1 <= shard <= shards:
        raise ValueError(f"shard {shard} of {shards}: K must be in 1..N")
    return list(range(shard - 1, n, shards))


def evaluate(
    complete_fn: Callable[[str, str], str],
    items: list[dict],
    limit: int | None = None,
    progress: bool = True,
    *,
    shard: tuple[int, int] | None = None,
    predictions: Path | None = None,
    model: str | None = None,
) -> dict:
    """Score `complete_fn(input, suffix)` on the first `limit` items (all when None).

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
            pred = first_line(complete_fn(items[i]["input"], items[i].get("suffix", "")))
            done[i] = prediction_row(i, items[i], pred, time.perf_counter() - t, model)
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


# --- predictions files: resumable and sharded evaluations --------------------------------------


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


# --- reading and writing ----------------------------------------------------------------------


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
    """One validated item: an object with string `input` and `gt`, optionally string `suffix`."""
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
    for key in ("input", "gt", "suffix"):
        if key in item and not isinstance(item[key], str):
            raise XtcError(f"{where}: \"{key}\" must be a string, got {type(item[key]).__name__}")
    return item


# --- building ---------------------------------------------------------------------------------


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
    spills = {tok.start[0] for tok in tokens if tok.end[0] > tok.start[0] and tok.type not in _LAYOUT}
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
            if tok.type not in _LAYOUT and tok.type != tokenize.COMMENT
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
