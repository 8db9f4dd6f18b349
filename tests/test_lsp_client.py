"""`lsp_server.client`: the one client that drives `xtc-lsp` (demo, benchmark, these tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from lsp_server.client import Client, RequestTimeout, end_of, session
from tests.lsp_fixtures import expected, tiny_models

SERVER = [sys.executable, "-m", "lsp_server"]


def tiny_env() -> dict[str, str]:
    return {**os.environ, "XTC_HOME": str(tiny_models().home), "XTC_THREADS": "1", "XTC_MIN_MEAN_LOGPROB": "none"}


def fake_server(tmp_path, body: str) -> list[str]:
    """A pygls server that runs `body` first (at import, before it reads stdin)."""
    script = tmp_path / "fake_server.py"
    script.write_text(textwrap.dedent(body) + textwrap.dedent("""
        import sys
        from pygls.lsp.server import LanguageServer
        LanguageServer("fake", "0").start_io(sys.stdin.buffer, sys.stdout.buffer)
    """))
    return [sys.executable, str(script)]


def test_end_of_counts_utf16_columns():
    assert end_of("a\nbc") == end_of("x\nyz") and (end_of("a\nbc").line, end_of("a\nbc").character) == (1, 2)
    assert end_of("é😀").character == 3  # the emoji is two UTF-16 units


async def test_completion_round_trip_on_the_tiny_model():
    models = tiny_models()
    text = "# client\nimport os\n\n\ndef main():\n    path = os.pa"
    async with session(SERVER, options={"xtc": {"model": str(models.gpt2), "workspaceContext": False}},
                       env=tiny_env()) as client:
        await client.wait_ready()
        uri = client.open("file:///client.py", text)
        want = expected(models.gpt2, text)
        assert want and await client.suggestion(uri, end_of(text)) == want
        client.change(uri, end_of(text), end_of(text), want[0])
        assert await client.suggestion(uri, end_of(text + want[0])) == want[1:]
        client.close_document(uri)
        assert await client.suggestion(uri, end_of(text)) == ""  # closed: the server forgot it
    assert client.returncode == 0


async def test_a_request_past_its_timeout_is_one_clear_line(tmp_path):
    command = fake_server(tmp_path, "import time; time.sleep(30)\n")  # answers nothing for 30 s
    client = Client(timeout=0.5)
    await client.start(command)
    try:
        with pytest.raises(RequestTimeout) as error:
            await client.initialize()
        assert str(error.value) == "xtc-lsp: no answer to initialize in 0.5 s"
    finally:
        assert await client.close() < 0  # never initialized: killed, not waited on for 30 s


async def test_a_chatty_stderr_does_not_block_the_server(tmp_path):
    """2 MB on stderr before it serves: more than a pipe holds, so unread it would hang."""
    command = fake_server(tmp_path, "import sys; sys.stderr.write('chatter\\n' * 250_000); sys.stderr.flush()\n")
    async with session(command, timeout=30) as client:
        assert client.result.server_info.name == "fake"
        assert client.stderr_tail[-1] == "chatter"
    assert client.returncode == 0


async def test_session_ends_the_process_even_when_the_block_fails(tmp_path):
    with pytest.raises(ZeroDivisionError):
        async with session(fake_server(tmp_path, ""), timeout=30) as client:
            pid = client._server.pid
            1 / 0
    assert client.returncode == 0  # shut down and exited, not left running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_client_does_not_import_torch():
    code = "import sys, lsp_server.client; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
