"""Faults through the real `xtc-lsp` over stdio (docs/reliability.md): a broken model, malformed
JSON-RPC, a storm of requests. The server answers empty or with a JSON-RPC error, says what is
wrong once, and keeps serving; the session ends with exit status 0 (checked by `lsp_session`)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import shutil
from concurrent.futures import Future
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled

from tests.lsp_fixtures import end_of, lsp_session, tiny_models

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXT = "import os\n\n\ndef main():\n    path = os.pa"


def broken_copies() -> dict[str, Path]:
    """Copies of the tiny GPT-2 directory, each broken one way."""
    models = tiny_models()
    out = {}
    for name, breaks in (("config-not-json", lambda d: (d / "config.json").write_text("{not json")),
                         ("weights-truncated", lambda d: (d / "model.safetensors").write_bytes(
                             (d / "model.safetensors").read_bytes()[:1000])),
                         ("layers-not-a-number", lambda d: (d / "config.json").write_text(json.dumps(
                             {**json.loads((d / "config.json").read_text()), "n_layer": "four"})))):
        d = models.root / f"broken-{name}"
        if not d.exists():
            shutil.copytree(models.gpt2, d)
            breaks(d)
        out[name] = d
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server():
    models = tiny_models()
    async with lsp_session({"xtc": {"model": str(models.gpt2), "workspaceContext": False}}, models.home) as session:
        yield session


async def send_raw(session, body: bytes, msg_id: int | str | None = None) -> Future | None:
    """Write one framed message as a buggy client would; with `msg_id`, a future for its answer."""
    future = None
    if msg_id is not None:
        future = Future()
        session.protocol._request_futures[msg_id] = future  # pygls hands the response to it
    written = session.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    if inspect.isawaitable(written):
        await written
    return future


async def still_serving(session, name: str) -> None:
    uri = session.open(f"file:///alive-{name}.py", TEXT)
    assert await asyncio.wait_for(session.inline(uri, end_of(TEXT)), 10), f"no suggestion after {name}"


# -- a broken model setting --------------------------------------------------------------------

async def test_a_broken_model_answers_empty_says_so_once_and_a_good_one_then_serves():
    models = tiny_models()
    broken = broken_copies()
    async with lsp_session({"xtc": {"model": str(broken["config-not-json"]), "workspaceContext": False}},
                           models.home) as session:
        uri = session.open("file:///broken.py", TEXT)
        error = await session.wait_status(1)
        assert error["state"] == "error" and "config.json" in error["message"]
        for _ in range(3):  # every request: empty at once, no new message
            assert await asyncio.wait_for(session.inline(uri, end_of(TEXT)), 10) == []
            assert await asyncio.wait_for(session.completion(uri, end_of(TEXT)), 10) == []
        for load, name in ((2, "weights-truncated"), (3, "layers-not-a-number")):
            session.configure({"settings": {"xtc": {"model": str(broken[name])}}})
            assert (await session.wait_status(load))["state"] == "error"
            assert await asyncio.wait_for(session.inline(uri, end_of(TEXT)), 10) == []
        shown = [m for m in session.messages if m.type == t.MessageType.Error]
        assert len(shown) == 3, shown  # one per broken load
        assert all("\n" not in m.message and "Traceback" not in m.message for m in shown), shown
        session.configure({"settings": {"xtc": {"model": str(models.gpt2)}}})
        assert (await session.wait_status(4))["state"] == "ready"
        assert await session.inline(uri, end_of(TEXT))


async def test_a_broken_model_switch_keeps_the_working_model_serving(server):
    broken = broken_copies()["weights-truncated"]
    load = len({s["load"] for s in server.statuses_of()}) + 1
    server.configure({"settings": {"xtc": {"model": str(broken)}}})
    try:
        assert (await server.wait_status(load))["state"] == "error"
        await still_serving(server, "broken-switch")
    finally:
        server.configure({"settings": {"xtc": {"model": str(tiny_models().gpt2)}}})
        await server.wait_status(load + 1)


# -- malformed JSON-RPC ------------------------------------------------------------------------

NOTIFICATIONS = {  # no answer is due: the server must only survive them
    "body not JSON": b"{not json",
    "body not UTF-8": b'{"jsonrpc": "2.0", "method": "\xff\xfe"}',
    "JSON array": b"[1, 2, 3]",
    "JSON number": b"42",
    "JSON null": b"null",
    "object without jsonrpc": b'{"id": 900, "method": "textDocument/completion"}',
    "unknown notification": b'{"jsonrpc": "2.0", "method": "xtc/noSuchThing", "params": {}}',
    "didOpen with wrong types": b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", '
                                b'"params": {"textDocument": {"uri": 5, "text": ["x"]}}}',
    "didChange of a document never opened": json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
        "textDocument": {"uri": "file:///never.py", "version": 2},
        "contentChanges": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                            "text": "x"}]}}).encode(),
    "didClose of a document never opened": b'{"jsonrpc": "2.0", "method": "textDocument/didClose", '
                                           b'"params": {"textDocument": {"uri": "file:///never.py"}}}',
    "configuration not an object": b'{"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration", '
                                   b'"params": {"settings": [1, "x", null]}}',
    "cancel of an unknown id": b'{"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 123456}}',
}


@pytest.mark.parametrize("body", list(NOTIFICATIONS.values()), ids=list(NOTIFICATIONS))
async def test_malformed_messages_leave_the_server_serving(server, body):
    await send_raw(server, body)
    await still_serving(server, "malformed")


def request(method: str, params, msg_id: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode()


POSITION = {"line": 0, "character": 0}
REQUEST_IDS = itertools.count()
REQUESTS = {  # each must get an answer (an error), not a hang
    "unknown method": ("xtc/noSuchMethod", {}),
    "completion without params": (t.TEXT_DOCUMENT_COMPLETION, None),
    "completion params not an object": (t.TEXT_DOCUMENT_COMPLETION, [1, 2]),
    "position of the wrong type": (t.TEXT_DOCUMENT_COMPLETION, {"textDocument": {"uri": "file:///a.py"},
                                                               "position": {"line": "one", "character": None}}),
    "document of the wrong type": (t.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": 7, "position": POSITION,
                                                                      "context": {"triggerKind": 1}}),
    "trigger kind out of range": (t.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": "file:///a.py"},
                                                                     "position": POSITION, "context": {"triggerKind": 99}}),
    "line past 2**31": (t.TEXT_DOCUMENT_COMPLETION, {"textDocument": {"uri": "file:///a.py"},
                                                     "position": {"line": 2 ** 40, "character": 0}}),
}


@pytest.mark.parametrize(("method", "params"), list(REQUESTS.values()), ids=list(REQUESTS))
async def test_malformed_requests_get_an_error_answer(server, method, params):
    msg_id = f"bad-{next(REQUEST_IDS)}"
    answer = await send_raw(server, request(method, params, msg_id), msg_id)
    with pytest.raises(JsonRpcException):
        await asyncio.wait_for(asyncio.wrap_future(answer), 10)
    await still_serving(server, "malformed-request")


async def test_completions_for_a_document_never_opened_and_odd_uris_are_empty(server):
    for uri in ("file:///never-opened.py", "file:///%ZZ%00.py", "untitled:Untitled-1", "", "not a uri at all"):
        assert await asyncio.wait_for(server.inline(uri, t.Position(0, 0)), 10) == []
        assert await asyncio.wait_for(server.completion(uri, t.Position(3, 7)), 10) == []
    await still_serving(server, "never-opened")


async def test_positions_out_of_range_are_empty_or_clamped(server):
    text = "s = '\U0001f600'\nx = s.up"  # a character of two UTF-16 units
    uri = server.open("file:///positions-faults.py", text)
    for line, character in ((1, 10 ** 6), (10 ** 6, 0), (2 ** 31 - 1, 2 ** 31 - 1), (0, 6), (0, 7), (2, 0)):
        items = await asyncio.wait_for(server.inline(uri, t.Position(line, character)), 30)
        assert isinstance(items, list)
    server.change(uri, t.Position(50, 0), t.Position(60, 5), "# past the end\n")  # an edit past the end
    server.change(uri, t.Position(1, 5), t.Position(0, 0), "")  # an edit whose end is before its start
    await still_serving(server, "positions")


async def test_a_lone_surrogate_in_a_document_spoils_no_completion(server):
    """`\\ud800` from a broken client: before, no tokenizer took the text, so that file and, through
    the workspace context, every other file got nothing."""
    server.configure({"settings": {"xtc": {"workspaceContext": True}}})
    try:
        text = "x = '\ud800'\nimport os\npath = os.pa"
        await send_raw(server, json.dumps({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": "file:///surrogate.py", "languageId": "python", "version": 1, "text": text}}}).encode())
        server.change("file:///surrogate.py", t.Position(0, 0), t.Position(0, 0), "\udc00")  # and in an edit
        assert await asyncio.wait_for(server.inline("file:///surrogate.py", end_of(text)), 10)
        await still_serving(server, "surrogate")  # another file, with the bad one as its context
    finally:
        server.configure({"settings": {"xtc": {"workspaceContext": False}}})


async def test_a_second_initialize_is_refused_and_the_session_goes_on(server):
    uri = server.open("file:///before-reinit.py", TEXT)
    answer = await send_raw(server, request(t.INITIALIZE, {"capabilities": {}, "processId": None}, "init-again"),
                            "init-again")
    with pytest.raises(JsonRpcException, match="initialize"):
        await asyncio.wait_for(asyncio.wrap_future(answer), 10)
    assert await asyncio.wait_for(server.inline(uri, end_of(TEXT)), 10)  # same documents, same model
    assert server.statuses_of()[-1]["state"] == "ready"


@pytest.mark.parametrize("miscount", [+7, -7])
async def test_a_miscounted_content_length_costs_a_message_not_the_session(server, miscount):
    body = json.dumps({"jsonrpc": "2.0", "method": "xtc/noSuchThing", "params": {"text": "\u00e9t\u00e9"}}).encode()
    written = server.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % (len(body) + miscount) + body)
    if inspect.isawaitable(written):
        await written
    await send_raw(server, b'{"jsonrpc": "2.0", "method": "xtc/sacrificed", "params": {}}')  # may be lost with it
    await still_serving(server, f"miscount{miscount}")


# -- a storm of requests -----------------------------------------------------------------------

async def test_a_storm_of_200_completions_is_all_answered_or_cancelled(server):
    uri = server.open("file:///storm.py", TEXT)
    protocol = server.protocol
    pending = []
    for i in range(200):
        params = t.CompletionParams(t.TextDocumentIdentifier(uri), end_of(TEXT),
                                    t.CompletionContext(t.CompletionTriggerKind.Invoked))
        pending.append(asyncio.ensure_future(protocol.send_request_async(t.TEXT_DOCUMENT_COMPLETION, params,
                                                                         msg_id=f"storm-{i}")))
        if i % 10 == 5:  # an editor cancels some as the user types on
            server.cancel_request(t.CancelParams(id=f"storm-{i}"))
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 120)
    errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, JsonRpcRequestCancelled)]
    assert not errors, errors[:3]
    assert isinstance(results[-1], t.CompletionList) and results[-1].items  # the last one is the one answered
    await still_serving(server, "storm")
