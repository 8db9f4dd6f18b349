"""A wheel built from the checkout, installed into a fresh venv outside it, completes offline
with the default student it carries."""

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lsp_server.client import end_of, session

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.network]


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not _pypi_reachable():
        pytest.skip("network: PyPI is unreachable (the fresh venv installs the wheel's dependencies from it)")
    tmp = tmp_path_factory.mktemp("wheel")
    venv = tmp / "venv"
    # Without PYTHONPATH: with the checkout on it, pip takes the build's codegpt_xtc.egg-info there
    # for an installed codegpt-xtc and skips the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    subprocess.run(pip + ["install", "build"], check=True, env=env)
    subprocess.run([str(venv / "bin" / "python"), "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True, env=env)
    wheel = next((tmp / "dist").glob("*.whl"))
    subprocess.run(pip + ["install", str(wheel)], check=True, cwd=tmp, env=env)
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


async def test_xtc_lsp_from_the_wheel_suggests_offline_outside_the_checkout(installed, tmp_path):
    _, venv = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XTC_REPO_MODELS", "VIRTUAL_ENV")}
    env.update(XTC_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    text = "def fibonacci(n):\n    "
    async with session([str(venv / "bin" / "xtc-lsp")], env=env, cwd=tmp_path, timeout=300) as client:
        uri = client.open((tmp_path / "a.py").as_uri(), text)
        await client.wait_ready()  # the model loads in the background
        assert (await client.suggestion(uri, end_of(text))).strip()
    assert client.returncode == 0
