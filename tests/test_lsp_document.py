"""The server's copy of a document follows incremental edits by LSP's line rule: only `\n`,
`\r\n` and `\r` end a line, so form feeds and Unicode separators inside a line do not shift
where an edit lands."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from lsp_server.document import use_lsp_lines

URI = "file:///tmp/a.py"


def edited(text: str, line: int, character: int, insert: str) -> str:
    workspace = Workspace(None, types.TextDocumentSyncKind.Incremental)
    use_lsp_lines(workspace)
    workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, text))
    at = types.Position(line, character)
    workspace.update_text_document(types.VersionedTextDocumentIdentifier(2, URI),
                                   types.TextDocumentContentChangePartial(types.Range(at, at), insert))
    return workspace.get_text_document(URI).source


@pytest.mark.parametrize("separator", ["\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\v"])
def test_an_edit_after_a_character_that_is_no_lsp_line_break_lands_on_the_right_line(separator):
    text = f"x = 1{separator}# note\ny = 2\n"
    # Line 1 is `y = 2`: the separator is inside line 0 for LSP.
    assert edited(text, 1, 5, "0") == f"x = 1{separator}# note\ny = 20\n"
    assert edited(text, 0, 7, "!") == f"x = 1{separator}#! note\ny = 2\n"


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_lsp_line_ending_still_ends_a_line(eol):
    assert edited(f"a{eol}b{eol}c", 2, 1, "d") == f"a{eol}b{eol}cd"
    assert edited(f"a{eol}b{eol}", 2, 0, "z") == f"a{eol}b{eol}z"
