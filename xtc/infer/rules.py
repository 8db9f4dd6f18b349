"""Small, named rules that shape a suggestion after the model wrote it (as Tabby's and Continue's
post-processing steps do): where a multi-line suggestion ends, what it must not repeat of the
text after the cursor, and when it is not worth showing at all."""

from __future__ import annotations

import re

_CLOSERS = frozenset(")]}\"'`;:,. ")


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def opens_block(line: str) -> bool:
    """A line after which an indented body follows: Python's `:` or a `{` (comments ignored)."""
    code = re.sub(r"\s+(#|//).*$", "", line).rstrip()
    return code.endswith((":", "{"))


def block_end(line_so_far: str, completion: str, in_body: bool) -> int | None:
    """Where a multi-line suggestion ends: the offset in `completion` of the line break before the
    first line that leaves the block (None: it has not left it yet). A line leaves when it is
    indented less than the block's body (llama.cpp's `n_indent`): deeper than the cursor's line
    when that line opens a block, at least as deep as the cursor's line when the cursor starts a
    body (`in_body`: the line before opens a block). Elsewhere a blank line ends it too."""
    lines = (line_so_far + completion).split("\n")
    first = lines[0]
    base = indentation(first) if first.strip() else len(first)
    opener = opens_block(first)
    limit = base + 1 if opener else base
    offset = len(first) - len(line_so_far)  # the line break ending the cursor's line, in `completion`
    for number, line in enumerate(lines[1:], start=1):
        complete = number < len(lines) - 1
        if line.strip():
            if indentation(line) < limit:
                return offset
        elif complete and not (opener or in_body):
            return offset
        offset += 1 + len(line)
    return None


def trim_rest_of_line_overlap(suggestion: str, rest_of_line: str) -> tuple[str, int]:
    """(text, replaced): the suggestion without what the line already has after the cursor.

    - the suggestion's end repeats the start of the rest of the line (`word)` before `) + 1`):
      that part is cut;
    - the rest of the line is only closing brackets, quotes and punctuation that the suggestion
      writes itself (`path, "r") as file:` before `):`): the suggestion replaces the rest of the
      line (`replaced` characters of it), as Tabby's bracket-aware range does.
    """
    rest = rest_of_line.rstrip()
    if not rest.strip() or not suggestion:
        return suggestion, 0
    for k in range(min(len(rest), len(suggestion)), 0, -1):
        # The whole rest, or a run of closing characters (a shorter overlap of words is chance:
        # `max` before `x + 1`).
        if suggestion.endswith(rest[:k]) and rest[:k].strip() and (k == len(rest) or set(rest[:k]) <= _CLOSERS):
            return suggestion[:-k].rstrip() if k == len(rest) else suggestion[:-k], 0
    if set(rest) <= _CLOSERS and _is_subsequence(rest.replace(" ", ""), suggestion):
        return suggestion, len(rest_of_line)
    return suggestion, 0


def _is_subsequence(needle: str, text: str) -> bool:
    it = iter(text)
    return all(char in it for char in needle)


def repeats_next_line(line_so_far: str, suggestion: str, after: str) -> bool:
    """The suggestion's first line makes the cursor's line a copy of the next non-empty line:
    the model is repeating what follows, not writing what is missing."""
    line = (line_so_far + suggestion.split("\n", 1)[0]).strip()
    following = after.split("\n")[1:] if "\n" in after else []
    nxt = next((candidate.strip() for candidate in following if candidate.strip()), "")
    return bool(line) and line == nxt


def repeats_itself(text: str) -> bool:
    """A suggestion caught in a loop: one line three times in a row, or a short piece of text
    (up to 8 characters) written four times back to back."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if any(lines[i] == lines[i + 1] == lines[i + 2] for i in range(len(lines) - 2)):
        return True
    return re.search(r"(\S.{0,7}?)\1{3,}", text) is not None


def unsure(mean_logprob: float, threshold: float | None) -> bool:
    """The model's own mean token log-probability is below the threshold (None: show everything)."""
    return threshold is not None and mean_logprob < threshold
