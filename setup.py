"""The wheel carries the shipped models: models/ is copied into xtc/_models at build time, so the
repository holds one copy and an installed package finds it (xtc/core/store.py, repo_models)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL_FILES = (".json", ".safetensors", ".txt", ".model", ".jinja")


class BuildWithModels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's models/ directly
        source = Path(__file__).parent / "models"
        for model in sorted(source.glob("*/config.json")):
            target = Path(self.build_lib) / "xtc" / "_models" / model.parent.name
            target.mkdir(parents=True, exist_ok=True)
            for f in model.parent.iterdir():
                if f.suffix in MODEL_FILES:
                    shutil.copy2(f, target / f.name)


setup(cmdclass={"build_py": BuildWithModels})
