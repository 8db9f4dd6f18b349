"""The server's copies of open documents, split into lines by LSP's rule: a line ends only at
`\n`, `\r\n` or `\r`. pygls splits with `str.splitlines`, which also breaks at `\f`, `\x1c`-`\x1e`,
`\x85`, `\u2028` and `\u2029`, so an incremental edit after one of those lands on the wrong line
and the copy drifts from the editor's."""

from __future__ import annotations

import re

from pygls.workspace import TextDocument, Workspace

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class LspTextDocument(TextDocument):
    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(_LINE.findall(self.source))


class LspWorkspace(Workspace):
    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> TextDocument:
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=self._sync_kind, position_codec=self._position_codec)


def use_lsp_lines(workspace: Workspace) -> None:
    """Make `workspace` (the one pygls creates at `initialize`) keep documents by LSP's lines."""
    workspace.__class__ = LspWorkspace
