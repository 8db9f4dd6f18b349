"""Shared helpers for the language-server tests: tiny models built once per session, the
expected suggestion computed by calling the library directly, and an LSP session that drives
the real `xtc-lsp` over stdio the way an editor does (`lsp_server.client`)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from lsp_server.client import Client, end_of, session

__all__ = ["TinyModels", "end_of", "expected", "lsp_session", "server_env", "tiny_models"]


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


def server_env(home: Path) -> dict[str, str]:
    """The environment a test's server runs in: store `home`, offline, one thread, every suggestion shown."""
    # One thread: tiny models gain nothing from more, and a busy 2-core machine makes them crawl.
    # Tiny models are unsure of everything: the server shows their suggestions like the library does.
    return {**os.environ, "XTC_HOME": str(home), "HF_HUB_OFFLINE": "1", "XTC_THREADS": "1",
            "XTC_MIN_MEAN_LOGPROB": "none"}


@contextlib.asynccontextmanager
async def lsp_session(options: Any, home: Path, wait_ready: bool = True,
                      env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """Start `python -m lsp_server` over stdio, initialize with `options`, yield, shut down cleanly.
    `env`: variables on top of `server_env`."""
    async with session([sys.executable, "-m", "lsp_server"], options=options, env={**server_env(home), **(env or {})},
                       echo_stderr=True) as client:
        if wait_ready:
            await client.wait_ready()
        yield client
    assert client.returncode == 0
