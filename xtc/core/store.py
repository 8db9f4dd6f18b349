"""Installed models: a directory per model under the store, one of them the default.

The store lives in `$XTC_HOME` (default `~/.local/share/xtc`). Models shipped inside the
repository (`models/`) are listed too, read-only: `$XTC_REPO_MODELS` names that directory, else it
is found beside the package when the package runs from a checkout (pyproject.toml and models/
next to `xtc/`), else inside an installed wheel (`xtc/_models/`, copied from models/ at build time
by setup.py). Installing (which loads and converts models,
so needs torch) is `xtc.train.install`'s; the store only gives it a staging directory, an atomic
move into place and the default's bookkeeping.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.core.format import CONFIG, weight_files_mb

PACKAGED_MODELS = "_models"  # xtc/_models in a built wheel: setup.py copies models/ there


def repo_models() -> Path | None:
    """The repository's `models/` directory: `$XTC_REPO_MODELS` when set ("" = none), else the
    checkout's when the package runs from one, else the copy a wheel carries (`xtc/_models`), else
    None (a `models/` beside site-packages would be another distribution's)."""
    configured = os.environ.get(defaults.REPO_MODELS_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured.strip() else None
    root = Path(__file__).resolve().parents[2]  # the folder holding the `xtc` package
    if (root / "pyproject.toml").is_file() and (root / "models").is_dir():
        return root / "models"
    packaged = Path(__file__).resolve().parents[1] / PACKAGED_MODELS
    return packaged if packaged.is_dir() else None


REPO_MODELS: Path | None = repo_models()
MODEL_FILES = (".json", ".safetensors", ".txt", ".model", ".jinja")  # what a model directory's install copies


def default_home() -> Path:
    return Path(os.environ.get(defaults.HOME_ENV) or Path.home() / ".local" / "share" / "xtc")


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
            if root is not None and root.is_dir():
                for d in sorted(root.iterdir()):
                    if (d / CONFIG).exists():
                        found[d.name] = d
        return found

    def default_name(self) -> str | None:
        """The user's choice; else the shipped default (`defaults.SHIPPED_DEFAULT`); else the user's
        first installed model. Other shipped models are there to be chosen, never implied."""
        models = self.models()
        try:
            name = json.loads(self._settings.read_text()).get("default")
        except (OSError, ValueError):
            name = None
        if name in models:
            return name
        if defaults.SHIPPED_DEFAULT in models:
            return defaults.SHIPPED_DEFAULT
        return next((n for n, d in models.items() if d.parent == self.models_dir), None)

    def resolve(self, name: str) -> Path | None:
        return self.models().get(name)

    def default_path(self) -> Path | None:
        name = self.default_name()
        return self.resolve(name) if name else None

    def listing(self) -> list[dict]:
        default = self.default_name()
        return [{"name": n, "path": str(p), "default": n == default, "disk_mb": round(weight_files_mb(p), 3)}
                for n, p in self.models().items()]

    # -- changes --------------------------------------------------------------------------------
    def set_default(self, name: str) -> None:
        if name not in self.models():
            raise XtcError(f"no installed model {name!r} (see `xtc list`)")
        self.home.mkdir(parents=True, exist_ok=True)
        self._settings.write_text(json.dumps({"default": name}) + "\n")

    def target(self, name: str) -> Path:
        """Where the user's model `name` is (or will be) installed."""
        return self.models_dir / name

    def has(self, name: str) -> bool:
        return (self.target(name) / CONFIG).exists()

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch directory inside the store (same file system, so `place` is a rename),
        removed afterwards."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=self.models_dir))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def place(self, staged: Path, name: str) -> Path:
        """Move a staged model directory into place atomically; if a concurrent install got there
        first, theirs stands."""
        target = self.target(name)
        try:
            staged.rename(target)
        except OSError:
            if not (target / CONFIG).exists():
                raise
        return target

    def after_install(self, name: str, default: bool = False) -> None:
        """Make `name` the default when asked, or when there is no other choice."""
        if default or self.default_name() in (None, name) or len(self.models()) == 1:
            self.set_default(name)
