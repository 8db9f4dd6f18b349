"""Shared fixtures: tiny models built here (no hub), and an isolated model store per test."""

from __future__ import annotations

import os
import socket
import urllib.parse

import pytest

from tests.tiny import build_model, build_tokenizer, train_briefly


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Every test gets its own empty `XTC_HOME`, prepared-layout cache and no repository models (here
    and in the processes it starts), so nothing touches the user's installed models or sees the shipped one."""
    home = tmp_path / "xtc-home"
    monkeypatch.setenv("XTC_HOME", str(home))
    monkeypatch.setenv("XTC_REPO_MODELS", "")
    monkeypatch.setattr("xtc.core.store.REPO_MODELS", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XTC_PREPARED_CACHE", str(tmp_path / "xtc-prepared"))  # prepared layouts: not the user's
    # Tiny models are unsure of everything: show their suggestions (tests of the rule set it themselves).
    monkeypatch.setenv("XTC_MIN_MEAN_LOGPROB", "none")
    return home


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer):
    """arch -> directory of a tiny Hugging Face model (4 layers, width 64), trained for a few
    seconds so that its predictions are peaked, as a real teacher's are."""
    dirs = {}
    for name in ("gpt2", "llama"):
        model, _ = build_model(name, tokenizer=tokenizer)
        train_briefly(model, tokenizer, steps=40, seq_len=64)
        out = tmp_path_factory.mktemp(f"tiny-{name}")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        dirs[name] = out
    return dirs


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A handful of real standard-library files as training data."""
    import shutil

    from tests.tiny import STDLIB

    out = tmp_path_factory.mktemp("corpus")
    for name in ("textwrap.py", "shlex.py", "string.py", "glob.py", "fnmatch.py", "bisect.py", "heapq.py",
                 "colorsys.py", "queue.py", "sched.py", "numbers.py", "keyword.py"):
        if (STDLIB / name).exists():
            shutil.copy(STDLIB / name, out / name)
    return out


def _registry_unreachable() -> str | None:
    """Why the package index cannot be reached (None when it can): one TCP connect, no download."""
    url = urllib.parse.urlparse(os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as error:
        return f"{url.hostname} unreachable ({error})"
    return None


def pytest_collection_modifyitems(config, items):
    """`network` tests run where the registry answers (CI, a connected laptop) and skip offline,
    saying why; the probe runs once, only when such a test was collected."""
    network = [item for item in items if item.get_closest_marker("network")]
    if network and (reason := _registry_unreachable()):
        for item in network:
            item.add_marker(pytest.mark.skip(reason=f"needs the PyPI registry: {reason}"))
