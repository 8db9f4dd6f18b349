"""A wheel built from the checkout, installed into a fresh venv outside it, completes offline
with the default student it carries."""

import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.network]


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _send(proc, msg: dict) -> None:
    body = json.dumps(msg).encode()
    proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    proc.stdin.flush()


def _answer(proc, id_: int, deadline: float) -> dict:
    while time.monotonic() < deadline:
        length = 0
        while (line := proc.stdout.readline().strip()):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if not length:
            break
        msg = json.loads(proc.stdout.read(length))
        if msg.get("id") == id_ and "method" not in msg:
            return msg
    raise AssertionError("no answer from xtc-lsp")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not _pypi_reachable():
        pytest.skip("network: PyPI is unreachable (the fresh venv installs the wheel's dependencies from it)")
    tmp = tmp_path_factory.mktemp("wheel")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    subprocess.run(pip + ["install", "build"], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("*.whl"))
    subprocess.run(pip + ["install", str(wheel)], check=True, cwd=tmp)
    return wheel, venv


def test_the_wheel_carries_the_default_student_and_no_torch(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "xtc/_models/smollm2-mixed-30l/model.safetensors" in names
    base = [l for l in metadata.splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l]
    assert not any("torch" in l or "transformers" in l for l in base)
    assert wheel.stat().st_size <= 50 * 1024 * 1024


def test_xtc_lsp_from_the_wheel_suggests_offline_outside_the_checkout(installed, tmp_path):
    _, venv = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XTC_REPO_MODELS", "VIRTUAL_ENV")}
    env.update(XTC_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(venv / "bin" / "xtc-lsp")], cwd=tmp_path, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        uri = (tmp_path / "a.py").as_uri()
        text = "def fibonacci(n):\n    "
        _send(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"processId": None, "rootUri": None, "capabilities": {}}})
        _answer(proc, 1, deadline)
        _send(proc, {"jsonrpc": "2.0", "method": "initialized", "params": {}})
        _send(proc, {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}}})
        items, id_ = [], 1
        while not items and time.monotonic() < deadline:  # the model loads in the background
            id_ += 1
            _send(proc, {"jsonrpc": "2.0", "id": id_, "method": "textDocument/inlineCompletion", "params": {
                "textDocument": {"uri": uri}, "position": {"line": 1, "character": 4},
                "context": {"triggerKind": 1}}})
            result = _answer(proc, id_, deadline).get("result") or []
            items = result["items"] if isinstance(result, dict) else result
            if not items:
                time.sleep(1)
        assert items and items[0]["insertText"].strip()
    finally:
        proc.kill()
        proc.wait()
