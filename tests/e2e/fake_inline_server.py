"""A language server with fixed inline completions, for the Neovim ghost-text test
(tests/e2e/nvim_ghost_lsp.lua): the client's requests (position, trigger kind) go as JSON lines
to $XTC_FAKE_LOG; the suggestion depends on the text before the cursor (SUGGESTIONS), so that
the test knows what to expect (after "slow" it answers late). A closing bracket right after the cursor is rewritten, as xtc-lsp
does. Run: python tests/e2e/fake_inline_server.py (stdio)."""

from __future__ import annotations

import asyncio
import json
import os

from lsprotocol import types
from pygls.lsp.server import LanguageServer

# the end of the text before the cursor -> the suggestion
SUGGESTIONS = {"abc": "_def, g)", "y": "ield x\nreturn y", "slow": "ly"}
SLOW = 0.5  # seconds before answering after "slow": the test types on meanwhile

server = LanguageServer("fake-inline", "0", text_document_sync_kind=types.TextDocumentSyncKind.Incremental)


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    line = doc.lines[params.position.line].rstrip("\n") if params.position.line < len(doc.lines) else ""
    col = doc.position_codec.position_from_client_units(doc.lines, params.position).character
    before, after = line[:col], line[col:]
    with open(os.environ["XTC_FAKE_LOG"], "a") as log:
        log.write(json.dumps({"line": params.position.line, "character": params.position.character,
                              "trigger": int(params.context.trigger_kind), "before": before}) + "\n")
    if before.endswith("slow"):
        await asyncio.sleep(SLOW)
    text = next((s for end, s in SUGGESTIONS.items() if before.endswith(end)), "")
    if not text:
        return types.InlineCompletionList(items=[])
    cursor = params.position
    end = types.Position(cursor.line, cursor.character + (1 if after.startswith(")") and text.endswith(")") else 0))
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=types.Range(cursor, end))])


if __name__ == "__main__":
    server.start_io()
