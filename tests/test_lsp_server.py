"""End to end: the real `xtc-lsp` over stdio, driven like an editor (`lsp_server.client`)."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from lsprotocol import types as t
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled

from tests.lsp_fixtures import end_of, expected, lsp_session, tiny_models

pytestmark = pytest.mark.asyncio(loop_scope="module")

SAMPLE = "# {name}\nimport os\n\n\ndef main():\n    path = os.pa"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server():
    models = tiny_models()
    # The suggestions are compared with the library's on the file alone: no workspace context here.
    # At debug level the server logs every answer's source (an inference or not) on stderr.
    async with lsp_session({"xtc": {"model": str(models.gpt2), "workspaceContext": False}}, models.home,
                           env={"XTC_LSP_LOG": "DEBUG"}) as session:
        yield session


async def answer_logged(server, channel: str, uri: str, source: str) -> str:
    """The server's debug line for an answer on `channel` for `uri` that came from `source`."""
    prefix = f"xtc-lsp DEBUG {channel} {uri}: {source},"
    deadline = time.monotonic() + 10
    while not (lines := [line for line in server.stderr_tail if line.startswith(prefix)]):
        assert time.monotonic() < deadline, f"no {prefix!r} line in {list(server.stderr_tail)}"
        await asyncio.sleep(0.02)
    return lines[-1]


def sample(name: str) -> str:
    return SAMPLE.format(name=name)


async def test_capabilities(server):
    caps = server.result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == t.TextDocumentSyncKind.Incremental
    ends = server.progress_ends()
    assert ends and "ready" in ends[0].message
    ready = await server.wait_status(1)
    assert [s["state"] for s in server.statuses_of(1)] == ["loading", "ready"]
    assert ready["model"] == "gpt2" and ready["message"]


async def test_the_server_watches_files_and_takes_saves(server, tmp_path):
    """It asks the client to watch the workspace's files (their changes reach the index, see
    test_lsp_engine) and hears didSave; neither disturbs completions."""
    [watch] = [r for r in server.registrations if r.method == t.WORKSPACE_DID_CHANGE_WATCHED_FILES]
    assert [w["globPattern"] for w in watch.register_options["watchers"]] == ["**/*"]
    assert server.result.capabilities.text_document_sync.save is not None
    text = sample("saved")
    uri = server.open((tmp_path / "saved.py").as_uri(), text)
    (tmp_path / "saved.py").write_text(text)
    server.save(uri)
    server.files_changed([(uri, t.FileChangeType.Changed), ((tmp_path / "gone.py").as_uri(), t.FileChangeType.Deleted)])
    assert [i.insert_text for i in await server.inline(uri, end_of(text))] == [expected(tiny_models().gpt2, text)]


async def test_inline_completion_is_the_library_suggestion(server):
    text = sample("inline")
    uri = server.open("file:///inline.py", text)
    want = expected(tiny_models().gpt2, text)
    assert want  # the tiny model does suggest something here
    items = await server.inline(uri, end_of(text))
    assert [i.insert_text for i in items] == [want]
    assert items[0].range == t.Range(end_of(text), end_of(text))


async def test_other_languages_get_suggestions_too(server):
    """A JavaScript file: the same rules, the document's raw text (this tiny model has no
    `<filename>` token, so no file-name header)."""
    text = "// tools\nconst path = require('path');\n\nfunction main() {\n    return path.jo"
    uri = server.open("file:///src/tools.js", text, "javascript")
    want = expected(tiny_models().gpt2, text, filename="tools.js", language="javascript")
    assert want and want == expected(tiny_models().gpt2, text)
    items = await server.inline(uri, end_of(text))
    assert [i.insert_text for i in items] == [want]


async def test_completion_is_the_same_suggestion(server):
    text = sample("completion")
    uri = server.open("file:///completion.py", text)
    want = expected(tiny_models().gpt2, text)
    [item] = await server.completion(uri, end_of(text))
    cursor = end_of(text)
    assert item.text_edit.new_text == "pa" + want  # the word being typed is replaced with word + suggestion
    assert item.text_edit.range == t.Range(t.Position(cursor.line, cursor.character - 2), cursor)
    assert item.filter_text.startswith("pa")


async def test_typing_the_suggestion_answers_the_rest_without_inference(server):
    text = sample("typing")
    uri = server.open("file:///typing.py", text)
    [first] = await server.inline(uri, end_of(text))
    await answer_logged(server, "inline", uri, "model")
    typed = first.insert_text[0]
    server.change(uri, end_of(text), end_of(text), typed)
    [rest] = await server.inline(uri, end_of(text + typed))
    assert rest.insert_text == first.insert_text[1:]
    await answer_logged(server, "inline", uri, "cache")  # the suggestion's rest, no inference
    assert sum(f"inline {uri}: model," in line for line in server.stderr_tail) == 1


async def test_incremental_changes(server):
    text = "# incremental\nimport sys\n\ndef run():\n    return sys."
    uri = server.open("file:///incremental.py", text)
    server.change(uri, t.Position(1, 7), t.Position(1, 10), "os")  # import sys -> import os
    server.change(uri, t.Position(4, 11), t.Position(4, 15), "os.pa")  # return sys. -> return os.pa
    final = "# incremental\nimport os\n\ndef run():\n    return os.pa"
    [item] = await server.inline(uri, end_of(final))
    assert item.insert_text == expected(tiny_models().gpt2, final)


async def test_bad_positions_are_clamped_or_empty(server):
    text = sample("positions")
    uri = server.open("file:///positions.py", text)
    assert await server.inline(uri, t.Position(999, 0)) == []  # line past the end
    [item] = await server.inline(uri, t.Position(5, 999))  # character past the end of the line
    assert item.range.start == end_of(text)
    assert item.insert_text == expected(tiny_models().gpt2, text)
    negative = t.Position(0, 0)
    object.__setattr__(negative, "line", -1)  # bypass lsprotocol's own validation, as a buggy client would
    with pytest.raises(JsonRpcInvalidParams):
        await asyncio.wait_for(server.inline(uri, negative), 10)  # answered (an error), not left hanging
    assert await server.inline(uri, end_of(text))  # and the server is still fine


async def test_unknown_document_is_empty(server):
    assert await server.inline("file:///never-opened.py", t.Position(0, 0)) == []
    assert await server.completion("file:///never-opened.py", t.Position(0, 0)) == []


async def test_stale_request_is_answered_empty_first(server):
    server.configure({"settings": {"xtc": {"debounceMs": 300}}})
    try:
        text = sample("stale")
        uri = server.open("file:///stale.py", text)
        order = []
        older = asyncio.ensure_future(server.inline(uri, end_of(text)))
        older.add_done_callback(lambda _: order.append("older"))
        await asyncio.sleep(0.05)
        newer = asyncio.ensure_future(server.inline(uri, end_of(text)))
        newer.add_done_callback(lambda _: order.append("newer"))
        assert await older == []
        assert len(await newer) == 1
        assert order == ["older", "newer"]
    finally:
        server.configure({"settings": {"xtc": {"debounceMs": 0}}})


async def test_cancel_request(server):
    server.configure({"settings": {"xtc": {"debounceMs": 3000}}})
    try:
        text = sample("cancel")
        uri = server.open("file:///cancel.py", text)
        started = time.monotonic()
        pending = asyncio.ensure_future(server.protocol.send_request_async(
            t.TEXT_DOCUMENT_INLINE_COMPLETION, server.inline_params(uri, end_of(text)), msg_id="cancel-me"))
        await asyncio.sleep(0.1)
        server.cancel_request(t.CancelParams(id="cancel-me"))
        with pytest.raises(JsonRpcRequestCancelled):
            await pending
        assert time.monotonic() - started < 2.5
    finally:
        server.configure({"settings": {"xtc": {"debounceMs": 0}}})
    assert await server.inline(uri, end_of(text))


async def test_max_new_tokens_setting(server):
    text = sample("tokens")
    uri = server.open("file:///tokens.py", text)
    server.configure({"settings": {"xtc": {"maxNewTokens": 2}}})
    try:
        [short] = await server.inline(uri, end_of(text))
        assert short.insert_text == expected(tiny_models().gpt2, text, max_new_tokens=2)
    finally:
        server.configure({"settings": {"maxNewTokens": 48}})  # the flat form works too
    [full] = await server.inline(uri, end_of(text))
    assert len(full.insert_text) > len(short.insert_text)


async def test_configuration_pulled_when_the_notification_has_none(server):
    text = sample("pull")
    uri = server.open("file:///pull.py", text)
    server.configuration["xtc"] = {"maxNewTokens": 1}
    server.configure(None)  # the server asks for the `xtc` section (workspace/configuration)
    try:
        while not any("max_new_tokens=1," in m.message for m in server.log_messages):
            await asyncio.sleep(0.02)
        [short] = await server.inline(uri, end_of(text))
        assert short.insert_text == expected(tiny_models().gpt2, text, max_new_tokens=1)
    finally:
        server.configure({"xtc": {"maxNewTokens": 48}})


async def test_multiline_when_invoked_or_on_a_fresh_line_after_a_block_opener(server):
    """With `multiline` the model is asked for a block when the suggestion is invoked, and while
    typing on a fresh line after a block opener; elsewhere for one line, and never without the
    setting. (The untrained tiny model writes no line break either way: the server's log tells
    how it asked, the answers are the library's for that mode.)"""
    plain, opener = "# multiline\nx = 1\ny = ", "# multiline\nclass Queue:\n    def put(self, item):\n        "
    cases = [(True, plain, False, "one line"), (True, plain, True, "multi-line"),
             (True, opener, False, "multi-line"), (False, opener, True, "one line")]
    for n, (setting, text, invoked, mode) in enumerate(cases):
        uri = server.open(f"file:///multiline{n}.py", text)
        server.configure({"settings": {"xtc": {"multiline": setting}}})
        try:
            items = await server.inline(uri, end_of(text), invoked=invoked)
        finally:
            server.configure({"settings": {"xtc": {"multiline": False}}})
        line = await answer_logged(server, "inline", uri, "model")
        assert line.split(", ")[1] == mode, (n, line)
        want = expected(tiny_models().gpt2, text, multiline=mode == "multi-line")
        assert [i.insert_text for i in items] == [w for w in [want] if w]


async def test_model_switch_reloads_in_the_background(server):
    models = tiny_models()
    text = sample("switch")
    uri = server.open("file:///switch.py", text)
    loads = len(server.progress_ends())
    server.configure({"settings": {"xtc": {"model": str(models.llama)}}})
    try:
        end = await server.wait_ready(loads + 1)
        assert "llama" in end.message
        items = await server.inline(uri, end_of(text))
        assert [i.insert_text for i in items] == [w for w in [expected(models.llama, text)] if w]
    finally:
        server.configure({"settings": {"xtc": {"model": str(models.gpt2)}}})
        await server.wait_ready(loads + 2)
    assert not server.messages  # no error shown for good models


async def test_two_quick_model_changes_report_structured_states_and_end_ready(server):
    """The status of a load is a state, not a sentence: a load replaced by a newer one before it
    finished is `superseded` (not an error), and the last load's `ready` is the final word."""
    models = tiny_models()
    first = max(s["load"] for s in server.statuses_of()) + 1
    server.configure({"settings": {"xtc": {"model": str(models.llama)}}})
    server.configure({"settings": {"xtc": {"model": str(models.gpt2)}}})
    last = await server.wait_status(first + 1)
    assert (last["state"], last["model"]) == ("ready", "gpt2")
    await server.wait_status(first)
    states = {s["load"]: [x["state"] for x in server.statuses_of(s["load"])] for s in server.statuses_of()}
    assert states[first] in (["loading", "superseded"], ["loading", "ready"])
    assert states[first + 1] == ["loading", "ready"]
    assert all(s["state"] != "error" for s in server.statuses_of())
    assert not server.messages  # no error pop-up either


async def test_missing_model_tells_once_and_answers_empty():
    models = tiny_models()
    async with lsp_session({"model": str(models.root / "no-such-model")}, models.home) as session:
        text = sample("missing")
        uri = session.open("file:///missing.py", text)
        assert await session.inline(uri, end_of(text)) == []
        assert await session.completion(uri, end_of(text)) == []
        session.configure({"settings": {"xtc": {"maxNewTokens": 8}}})  # not a model change: no new message
        assert await session.inline(uri, end_of(text)) == []
        [message] = session.messages
        assert message.type == t.MessageType.Error
        assert "xtc install smollm2" in message.message and "no-such-model" in message.message
        assert "xtc install smollm2" in session.progress_ends()[0].message
        error = await session.wait_status(1)
        assert error["state"] == "error" and error["model"] == str(models.root / "no-such-model")
        assert "xtc install smollm2" in error["message"]
    # leaving the block sent shutdown + exit and checked the exit status is 0


async def test_the_log_says_which_kernels_the_model_runs_on(server):
    """After a load the server logs the compiled kernel variant (or numpy and why) to the client."""
    from xtc.infer import kernels

    await server.wait_status(1)
    deadline = time.monotonic() + 30
    while not (lines := [m.message for m in server.log_messages if m.message.startswith("kernels: ")]):
        assert time.monotonic() < deadline, "no kernels line in the client's log"
        await asyncio.sleep(0.02)
    assert lines[0].split()[1] == kernels.name(kernels.load())  # the server chose as this process does


async def test_secret_files_get_no_suggestion(server):
    for uri in ("file:///w/.env", "file:///w/deploy/server.key", "file:///w/.env.production"):
        text = sample("secret")
        server.open(uri, text)
        assert await server.inline(uri, end_of(text)) == []
