"""CodeXGLUE's line-level metrics: both sides normalised to Python tokens, so that spacing
(`foo(a,b)` vs `foo(a, b)`) never counts as an error and scores compare with published ones."""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Sequence

from rapidfuzz import fuzz

#: Token types the metrics ignore: layout only, never something a completion must type.
LAYOUT = frozenset(
    {
        tokenize.NEWLINE,
        tokenize.NL,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)


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
            if tok.type in LAYOUT or not tok.string.strip():
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

