"""The server's copies of open documents, split into lines by LSP's rule: a line ends only at
`\n`, `\r\n` or `\r`. pygls splits with `str.splitlines`, which also breaks at `\f`, `\x1c`-`\x1e`,
`\x85`, `\u2028` and `\u2029`, so an incremental edit after one of those lands on the wrong line
and the copy drifts from the editor's.

Text also comes in as the client's JSON says: a lone UTF-16 surrogate (`"\\ud800"`, a broken
client or file) is a character no tokenizer encodes, so every completion that saw it would fail,
those of other files too through the workspace context. It is kept as U+FFFD: one character,
one UTF-16 unit, like the surrogate, so positions stay where the editor has them."""

from __future__ import annotations

import re

import attrs
from pygls.workspace import TextDocument, Workspace

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (the common case, none, costs one encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


class LspTextDocument(TextDocument):
    def __init__(self, uri: str, source: str | None = None, **kwargs):
        super().__init__(uri, source=None if source is None else encodable(source), **kwargs)

    def apply_change(self, change) -> None:
        clean = encodable(change.text)
        super().apply_change(change if clean is change.text else attrs.evolve(change, text=clean))

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
