"""Shared helpers for the language-server tests: tiny models built once per session, the
expected suggestion computed by calling the library directly, and an LSP session that drives
the real `xtc-lsp` over stdio the way an editor does."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from lsprotocol import types as t

CAPABILITIES = t.ClientCapabilities(
    window=t.WindowClientCapabilities(work_done_progress=True),
    workspace=t.WorkspaceClientCapabilities(configuration=True),
)


@dataclass(frozen=True)
class TinyModels:
    root: Path
    gpt2: Path
    llama: Path
    home: Path  # an empty XTC_HOME: no installed models


@functools.cache
def tiny_models() -> TinyModels:
    """Two untrained tiny models sharing one tokenizer (a few seconds, once per session)."""
    from tests.tiny import build_model, build_tokenizer

    root = Path(tempfile.mkdtemp(prefix="xtc-lsp-test-"))
    atexit.register(shutil.rmtree, root, True)
    tokenizer = build_tokenizer()
    paths = {}
    for arch, layers in (("gpt2", 4), ("llama", 2)):
        model, _ = build_model(arch, layers=layers, width=64, tokenizer=tokenizer)
        paths[arch] = root / arch
        model.save_pretrained(paths[arch])
        tokenizer.save_pretrained(paths[arch])
    (root / "home").mkdir()
    return TinyModels(root, paths["gpt2"], paths["llama"], root / "home")


def expected(model: Path, before: str, after: str = "", **options: Any) -> str:
    """The suggestion the library gives for this text, from a fresh runtime (greedy, deterministic)."""
    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    return Completer(load_runtime(str(model), threads=1)).complete(before, after, **options).text


def end_of(text: str) -> t.Position:
    lines = text.split("\n")
    return t.Position(len(lines) - 1, len(lines[-1]))


class Session:
    """One running server and the client talking to it."""

    def __init__(self, client, result: t.InitializeResult):
        self.client = client
        self.result = result
        self._version = 1

    def open(self, uri: str, text: str, language: str = "python") -> str:
        self.client.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, language, 1, text)))
        return uri

    def change(self, uri: str, start: t.Position, end: t.Position, text: str) -> None:
        self._version += 1
        self.client.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(uri=uri, version=self._version),
            [t.TextDocumentContentChangePartial(range=t.Range(start, end), text=text)]))

    def configure(self, settings: Any) -> None:
        self.client.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings=settings))

    def inline_params(self, uri: str, position: t.Position, invoked: bool = False) -> t.InlineCompletionParams:
        kind = t.InlineCompletionTriggerKind.Invoked if invoked else t.InlineCompletionTriggerKind.Automatic
        return t.InlineCompletionParams(t.InlineCompletionContext(kind), t.TextDocumentIdentifier(uri), position)

    async def inline(self, uri: str, position: t.Position, invoked: bool = False) -> list[t.InlineCompletionItem]:
        result = await self.client.text_document_inline_completion_async(self.inline_params(uri, position, invoked))
        return list(result.items) if isinstance(result, t.InlineCompletionList) else list(result or [])

    async def completion(self, uri: str, position: t.Position) -> list[t.CompletionItem]:
        result = await self.client.text_document_completion_async(t.CompletionParams(
            t.TextDocumentIdentifier(uri), position, t.CompletionContext(t.CompletionTriggerKind.Invoked)))
        return list(result.items) if isinstance(result, t.CompletionList) else list(result or [])

    def statuses(self, load: int | None = None) -> list[dict]:
        """The `xtc/status` notifications received (of load number `load`), oldest first."""
        return [s for s in self.client.xtc_statuses if load is None or s["load"] == load]

    async def wait_status(self, load: int, states: tuple[str, ...] = ("ready", "error", "superseded"),
                          timeout: float = 60) -> dict:
        """The first `xtc/status` of load number `load` in one of `states`."""
        deadline = time.monotonic() + timeout
        while not (found := [s for s in self.statuses(load) if s["state"] in states]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {states} status for load {load} after {timeout} s: {self.statuses()}")
            await asyncio.sleep(0.05)
        return found[0]

    def progress_ends(self) -> list[t.WorkDoneProgressEnd]:
        return [v for values in self.client.progress_reports.values() for v in values
                if isinstance(v, t.WorkDoneProgressEnd)]

    async def wait_ready(self, loads: int = 1, timeout: float = 60) -> t.WorkDoneProgressEnd:
        """Wait until `loads` model loads have ended (work-done progress `end`)."""
        deadline = time.monotonic() + timeout
        while len(self.progress_ends()) < loads:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no model-ready progress after {timeout} s")
            await asyncio.sleep(0.05)
        return self.progress_ends()[loads - 1]


@contextlib.asynccontextmanager
async def lsp_session(options: Any, home: Path, wait_ready: bool = True) -> AsyncIterator[Session]:
    """Start `python -m lsp_server` over stdio, initialize with `options`, yield, shut down cleanly."""
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    client.xtc_statuses = []

    @client.feature("xtc/status")
    def status(params: Any) -> None:  # the model's load state (pygls gives a namedtuple)
        client.xtc_statuses.append(params if isinstance(params, dict) else params._asdict())
    # One thread: tiny models gain nothing from more, and a busy 2-core machine makes them crawl.
    # Tiny models are unsure of everything: the server shows their suggestions like the library does.
    env = {**os.environ, "XTC_HOME": str(home), "HF_HUB_OFFLINE": "1", "XTC_THREADS": "1", "XTC_MIN_MEAN_LOGPROB": "none"}
    await client.start_io(sys.executable, "-m", "lsp_server", env=env)
    try:
        result = await client.initialize_session(t.InitializeParams(capabilities=CAPABILITIES,
                                                                    initialization_options=options))
        session = Session(client, result)
        if wait_ready:
            await session.wait_ready()
        yield session
        await asyncio.wait_for(client.shutdown_session(), 20)
        assert client._server.returncode == 0
    finally:
        await client.stop()
