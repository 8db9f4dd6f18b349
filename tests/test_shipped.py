"""The trained student shipped in `models/`: what a fresh clone completes with, offline."""

from __future__ import annotations

import json
from pathlib import Path

from xtc.core import defaults, store
from xtc.core.format import read_config, xtc_section
from xtc.infer.complete import Completer
from xtc.infer.runtime import load_runtime

MODELS = Path(__file__).resolve().parents[1] / "models"
TEACHER_FP32_MB = 538.06  # SmolLM2-135M-Instruct as fp32 safetensors (`xtc install smollm2`)


def shipped() -> list[Path]:
    return sorted(d for d in MODELS.iterdir() if (d / "config.json").is_file())


def default_student() -> Path:
    """The shipped model a fresh checkout serves: the one `defaults.SHIPPED_DEFAULT` names."""
    model = MODELS / defaults.SHIPPED_DEFAULT
    assert model in shipped(), f"{defaults.SHIPPED_DEFAULT} is not shipped in {MODELS}"
    return model


def test_the_default_shipped_student_is_packed_at_most_50_mb_and_at_least_8x_smaller():
    model = default_student()
    section = xtc_section(read_config(model), model)
    assert section["teacher_layers"] == 30 and section["quant"], "a trained, quantised student, not the teacher"
    files_mb = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) / 1e6
    assert files_mb <= 50
    assert TEACHER_FP32_MB / (model / "model.safetensors").stat().st_size * 1e6 >= 8


def test_a_fresh_checkout_lists_the_student_and_defaults_to_what_defaults_names(monkeypatch):
    """The shipped student is the default of a checkout with nothing installed (`defaults.SHIPPED_DEFAULT`
    names it: it keeps at least 80% of the teacher's score), so `make demo` and the editors need no download."""
    monkeypatch.setattr(store, "REPO_MODELS", MODELS)
    model = default_student()
    assert store.Store().models()[model.name] == model
    assert defaults.SHIPPED_DEFAULT == model.name
    assert store.Store().default_name() == model.name and store.Store().default_path() == model


def test_the_shipped_student_loads_directly_and_completes_python():
    model = default_student()
    rt = load_runtime(str(model))
    assert rt.loader == "direct"
    text = Completer(rt).complete("import os\n\n\ndef read_text(path):\n    with open(path) as f:\n        return",
                                  max_new_tokens=12).text
    # The obvious body of this function, exactly: greedy decoding on kernels that sum in one fixed order.
    assert text == " f.read()", text
    card = json.loads((model / "config.json").read_text())["xtc"]
    assert card["quant"], "every quantised module names its quantiser"
