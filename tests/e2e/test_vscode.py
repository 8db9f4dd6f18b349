"""VS Code end to end: the packaged extension in a real VS Code (code-server 4.100.3, web build)
driven by headless Chromium; ghost text from xtc-lsp on a tiny model appears while typing and
Tab accepts it, in a Python and in a JavaScript file. The driver is vscode_e2e.mjs; screenshots
and logs go to artifacts/e2e/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import CACHE, REPO, require

pytestmark = pytest.mark.e2e

CLIENT = REPO / "vscode-client"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def run(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def vscode() -> None:
    """What the VS Code tests need besides the extension; checked before it is built."""
    require(shutil.which("node") and shutil.which("npm"), "node and npm are not installed")
    code_server = CACHE / "code-server" / "node_modules" / ".bin" / "code-server"
    require(code_server.exists(), f"code-server is not installed in {code_server.parent}")
    require((CACHE / "playwright" / "node_modules" / "playwright-core").exists(), "playwright-core is not installed")
    require(Path(CHROMIUM).exists(), f"Chromium is not installed ({CHROMIUM}; Debian package chromium)")


@pytest.fixture(scope="module")
def vsix(vscode) -> Path:
    if not (CLIENT / "node_modules" / ".bin" / "vsce").exists():
        done = run(["npm", "ci", "--no-audit", "--no-fund"], CLIENT, 600)
        assert done.returncode == 0, done.stdout + done.stderr
    done = run(["npm", "run", "package"], CLIENT, 300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = CLIENT / "xtc-vscode.vsix"
    assert out.stat().st_size > 10_000
    return out


def drive(vsix: Path, xtc_lsp: Path, model: str, out: Path, *extra: str) -> dict:
    """Run vscode_e2e.mjs; its JSON report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "vscode-e2e.json").unlink(missing_ok=True)
    cmd = ["node", str(REPO / "tests" / "e2e" / "vscode_e2e.mjs"), "--vsix", str(vsix),
           "--server", json.dumps([str(xtc_lsp)]), "--model", model, "--cache", str(CACHE),
           "--artifacts", str(out), "--chromium", CHROMIUM, "--timeout", "120", *extra]
    done = run(cmd, REPO, 300)
    print(done.stderr)
    assert (out / "vscode-e2e.json").exists(), f"no report (exit {done.returncode}): {done.stderr[-3000:]}"
    report = json.loads((out / "vscode-e2e.json").read_text())
    assert done.returncode == 0 and report["ok"], report.get("error") or done.stderr[-3000:]
    return report


def test_ghost_text_accepted_with_tab(vsix, xtc_lsp, tiny_model, artifacts):
    """In a Python file, then in a JavaScript file (a language of the default `xtc.languages`; the
    tiny model writes junk JavaScript, but the ghost text shows and Tab accepts it)."""
    report = drive(vsix, xtc_lsp, str(tiny_model), artifacts)
    # Tab put the suggestion into the document, which was saved to disk.
    for part in (report, report["js"]):
        assert part["ghost"].strip()
        assert part["ghost"].split("\n")[0].strip() in part["saved"]
    assert report["js"]["typed"] and "function split(text) {\n".startswith(report["js"]["typed"])
    assert report["foreignRequests"] == []
    assert "xtc:" in (report.get("status") or "")  # the status bar item names the model
    assert (artifacts / "vscode-ghost-text.png").stat().st_size > 0
    assert (artifacts / "vscode-ghost-text-js.png").stat().st_size > 0


def test_missing_model_is_reported(vsix, xtc_lsp, artifacts, tmp_path):
    """A model that cannot load: a pop-up naming the problem, an error in the status bar."""
    report = drive(vsix, xtc_lsp, str(tmp_path / "no-such-model"), artifacts / "model-error", "--expect-error")
    assert "no-such-model" in report["notification"]
    assert "error" in report["status"]
    assert report["foreignRequests"] == []
