"""Shared set-up of the editor end-to-end tests (marked `e2e`; `make e2e` runs them).

What they need is installed by tests/e2e/setup.sh into $XTC_E2E_CACHE (default
~/.cache/xtc-e2e). A missing piece skips a test with the reason, except under CI=true, where it
fails the test: CI must run them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XTC_E2E_CACHE", Path.home() / ".cache" / "xtc-e2e"))
ARTIFACTS = REPO / "artifacts" / "e2e"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The editors' servers inherit this: tiny models are unsure of everything, show their suggestions.
os.environ["XTC_MIN_MEAN_LOGPROB"] = "none"


def require(ok: object, reason: str) -> None:
    """Skip (fail under CI) unless `ok`."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the editor tests must run; tests/e2e/setup.sh installs it)")
    pytest.skip(f"{reason}; run tests/e2e/setup.sh (or make e2e) to install it")


@pytest.fixture(scope="session")
def xtc_lsp() -> Path:
    """The server executable: the one installed beside this Python (the project's .venv)."""
    candidates = [Path(sys.executable).parent / "xtc-lsp", REPO / ".venv" / "bin" / "xtc-lsp"]
    found = next((c for c in candidates if c.exists()), None)
    require(found, "xtc-lsp is not installed (make venv)")
    return found


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A tiny GPT-2 (tests/tiny.py): built once into the cache if setup.sh has not."""
    out = CACHE / "tiny-gpt2"
    if not (out / "config.json").exists():
        from tests.tiny import write_model

        tmp = CACHE / "tiny-gpt2.tmp"
        write_model(tmp, "gpt2", train_steps=int(os.environ.get("XTC_E2E_TRAIN_STEPS", "40")), width=64)
        tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
