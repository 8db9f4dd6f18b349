"""Model sources through transformers: a broken user file is a one-line `XtcError`, a bug keeps
its traceback (as `xtc.core.errors` promises)."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from tests.tiny import write_model
from xtc.core.errors import XtcError
from xtc.core.sources import load_with_transformers, resolve


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("small") / "gpt2", "gpt2", 0, layers=1, width=32, heads=2)


def broken_copy(small_dir, tmp_path, name: str):
    out = tmp_path / name
    shutil.copytree(small_dir, out)
    return out


def edit_config(directory, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))


def test_broken_files_are_one_line_user_errors(small_dir, tmp_path):
    corrupt = broken_copy(small_dir, tmp_path, "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)  # SafetensorError
    no_weights = broken_copy(small_dir, tmp_path, "no-weights")
    (no_weights / "model.safetensors").unlink()  # OSError
    bad_type = broken_copy(small_dir, tmp_path, "bad-type")
    edit_config(bad_type, n_layer="one")  # the config's strict validation
    wrong_shape = broken_copy(small_dir, tmp_path, "wrong-shape")
    edit_config(wrong_shape, n_embd=64)  # weights of another model: size mismatch
    bad_tokenizer = broken_copy(small_dir, tmp_path, "bad-tokenizer")
    (bad_tokenizer / "tokenizer.json").write_text("{not json")  # JSONDecodeError
    for directory in (corrupt, no_weights, bad_type, wrong_shape, bad_tokenizer):
        with pytest.raises(XtcError, match="cannot load the model") as caught:
            load_with_transformers(resolve(str(directory)))
        assert str(directory) in str(caught.value) and "\n" not in str(caught.value)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + struct.pack("<I", 3))  # struct.error inside the GGUF reader
    with pytest.raises(XtcError, match="cannot read the GGUF file"):
        load_with_transformers(resolve(str(truncated)))


@pytest.mark.parametrize("bug", [TypeError("unexpected keyword"), AttributeError("no attribute 'x'"),
                                 RuntimeError("CUDA error: device-side assert"), ZeroDivisionError("division")])
def test_bugs_are_not_turned_into_user_errors(small_dir, monkeypatch, bug):
    from transformers import AutoModelForCausalLM

    from xtc.train.load import load_model

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(type(bug)):
        load_with_transformers(resolve(str(small_dir)))
    with pytest.raises(type(bug)):  # the torch loader takes the same route
        load_model(str(small_dir))


def test_server_resolution_refuses_hub_ids_without_a_connection(monkeypatch, tmp_path):
    import socket

    from xtc.core.errors import XtcError
    from xtc.core.sources import resolve
    from xtc.core.store import Store

    def no_network(*a, **k):
        raise AssertionError("network connection attempted")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)
    for src in ("runs/int3", "models/smollm2-mixed-30l"):
        with pytest.raises(XtcError, match="xtc install smollm2"):
            resolve(src, store=Store(tmp_path / "store"), allow_hub=False)
