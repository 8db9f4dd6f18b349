"""The named rules that shape a suggestion after the model wrote it."""

from __future__ import annotations

import pytest

from xtc.infer.rules import block_end, opens_block, repeats_itself, repeats_next_line, trim_rest_of_line_overlap, unsure


@pytest.mark.parametrize(("suggestion", "rest", "expected"), [
    # The three lines the issue shows, as the editor would end up with them.
    ('path, "r") as file:', "):", ('path, "r") as file:', 2)),  # replaces "):"
    ("word.lower(), -1)", ") + 1", ("word.lower(), -1", 0)),  # the ")" is already there
    ("[str(x) for x in zip(a, b)])", "))", ("[str(x) for x in zip(a, b)]", 0)),
    ("name)", ")", ("name", 0)),
    ("max", "x + 1", ("max", 0)),  # a chance overlap of letters is not trimmed
    ("value", "", ("value", 0)),
    ("compute(a, b)", "  # note", ("compute(a, b)", 0)),
])
def test_the_suggestion_never_repeats_the_rest_of_the_line(suggestion, rest, expected):
    assert trim_rest_of_line_overlap(suggestion, rest) == expected


@pytest.mark.parametrize(("before", "after", "suggestion", "line"), [
    ("    with open(", "):", 'path, "r") as file:', '    with open(path, "r") as file:'),
    ("        counts[word] = counts.get(", ") + 1", "word, 0)", "        counts[word] = counts.get(word, 0) + 1"),
    ("print(', '.join(", "))", "[str(x) for x in zip(a, b)])", "print(', '.join([str(x) for x in zip(a, b)]))"),
])
def test_the_line_after_accepting_has_each_closing_bracket_once(before, after, suggestion, line):
    text, replaced = trim_rest_of_line_overlap(suggestion, after)
    assert before + text + after[replaced:] == line


def test_a_suggestion_equal_to_the_next_line_is_dropped():
    assert repeats_next_line("    ", "return total", "\n\n    return total\n")
    assert not repeats_next_line("    ", "total += 1", "\n    return total\n")
    assert not repeats_next_line("", "x", "")


def test_suggestions_caught_in_a_loop_are_recognised():
    assert repeats_itself("x = 1\nx = 1\nx = 1")
    assert repeats_itself("foo(foo(foo(foo(")
    assert not repeats_itself("for i in range(10):\n    total += i")


def test_unsure_compares_the_mean_logprob_with_the_threshold():
    assert unsure(-3.0, -2.0) and not unsure(-1.0, -2.0) and not unsure(-99.0, None)


def test_lines_that_open_a_block():
    assert opens_block("def f(x):") and opens_block("    if x:  # comment") and opens_block("fn main() {")
    assert not opens_block("x = {'a': 1}") and not opens_block("return x")


def test_a_block_runs_until_a_line_indented_less_than_its_body():
    # Cursor at the start of a function's body: blank lines inside the body do not end it.
    body = "total = 0\n\n    for x in xs:\n        total += x\n    return total\ndef other():\n"
    end = block_end("    ", body, in_body=True)
    assert body[:end] == "total = 0\n\n    for x in xs:\n        total += x\n    return total"
    # Cursor at the end of a line that opens a block: the body is everything deeper than it.
    opener = "\n        pass\n    x = 1\n"
    assert opener[:block_end("    def f(self):", opener, in_body=False)] == "\n        pass"
    # Elsewhere a blank line ends it too, and an unfinished last line is not judged yet.
    assert block_end("x = 1", "\ny = 2\n\nz = 3", in_body=False) == len("\ny = 2")
    assert block_end("    ", "total = 0\n    ", in_body=True) is None
