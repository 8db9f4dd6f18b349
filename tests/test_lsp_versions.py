"""Answers are checked against the document version they were computed for: a suggestion for
text the editor no longer has is answered empty, its source "outdated"."""

from __future__ import annotations

import asyncio
import threading

import pytest
from lsprotocol import types as t

from lsp_server.document import LspWorkspace
from lsp_server.engine import Engine
from lsp_server.server import XtcServer
from tests.lsp_fixtures import end_of, expected, lsp_session, tiny_models
from tests.test_lsp_engine import FakeCompleter

URI = "file:///w/app.py"
TEXT = "def main():\n    return"


class Gated(FakeCompleter):
    """Waits at `gate` before answering, so that the test can edit the document meanwhile."""

    def __init__(self) -> None:
        super().__init__(" value")
        self.gate = threading.Event()

    def complete(self, before, after="", **options):
        if "should_stop" in options:  # a request, not the warm-up
            self.started.set()
            assert self.gate.wait(10)
        return super().complete(before, after, **options)


@pytest.fixture
def server():
    server = XtcServer()
    server.engine.close()
    fake = Gated()
    server.engine = Engine(loader=lambda src: fake)
    assert server.engine.load().result(10) == "fake"
    server.protocol._workspace = LspWorkspace(None)  # what `initialize` makes, without a client
    server.workspace.put_text_document(t.TextDocumentItem(URI, "python", 1, TEXT))
    yield server, fake
    server.engine.close()


def change(server: XtcServer, version: int, text: str) -> None:
    at = end_of(TEXT)
    server.workspace.update_text_document(t.VersionedTextDocumentIdentifier(uri=URI, version=version),
                                          t.TextDocumentContentChangePartial(range=t.Range(at, at), text=text))


async def answer(server: XtcServer, fake: Gated, edit) -> object:
    """A suggestion at the end of TEXT, with `edit` applied while the model computes it."""
    pending = asyncio.ensure_future(server.suggest(URI, end_of(TEXT), False, "inline"))
    assert await asyncio.to_thread(fake.started.wait, 10)
    try:
        edit()
    finally:
        fake.gate.set()
    return await asyncio.wait_for(pending, 10)


def test_an_unchanged_document_gets_the_suggestion(server):
    server, fake = server
    s = asyncio.run(answer(server, fake, lambda: None))
    assert (s.text, s.source) == (" value", "model")


def test_a_document_changed_meanwhile_gets_an_empty_outdated_answer(server):
    server, fake = server
    s = asyncio.run(answer(server, fake, lambda: change(server, 2, " x")))
    assert (s.text, s.source, s.replace_units) == ("", "outdated", 0)


def test_a_document_closed_and_reopened_meanwhile_is_outdated_too(server):
    server, fake = server

    def reopen():
        server.workspace.remove_text_document(URI)
        server.workspace.put_text_document(t.TextDocumentItem(URI, "python", 1, "other = 1"))

    s = asyncio.run(answer(server, fake, reopen))
    assert (s.text, s.source) == ("", "outdated")


async def test_over_stdio_an_edit_during_the_debounce_empties_the_answer():
    """The real server: the request waits `debounceMs`, the editor types meanwhile; the answer
    computed for the text before the edit is not sent."""
    models = tiny_models()
    text = "# versions\nimport os\n\n\ndef main():\n    path = os.pa"
    async with lsp_session({"xtc": {"model": str(models.gpt2), "workspaceContext": False, "debounceMs": 400}},
                           models.home) as session:
        other = session.open("file:///unchanged.py", text)  # another document: no cache for versions.py
        unchanged = await asyncio.wait_for(session.inline(other, end_of(text)), 30)
        uri = session.open("file:///versions.py", text)
        pending = asyncio.ensure_future(session.inline(uri, end_of(text)))
        await asyncio.sleep(0.1)
        session.change(uri, t.Position(0, 0), t.Position(0, 0), "# edited\n")  # above the cursor
        edited = await asyncio.wait_for(pending, 30)
    # (asserted after the session: a failure inside it would leave the server running)
    assert [i.insert_text for i in unchanged] == [expected(models.gpt2, text)]
    assert edited == []
