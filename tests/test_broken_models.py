"""A packed model broken on disk (docs/reliability.md): the loader says what is wrong in one line
(`XtcError`) and `xtc bench` exits 1 with that line, never a traceback, and never runs a model
whose tensors the kernels would read past."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from xtc.cli import main
from xtc.core.errors import XtcError


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """arch -> a tiny packed student (2 layers, binary weights, 8-bit embeddings), untrained."""
    from tests.tiny import build_model
    from xtc.train.pack import save_packed
    from xtc.train.pipeline import CompressOptions, build_student

    out = {}
    for arch in ("llama", "gpt2"):
        model, _ = build_model(arch, layers=2, tokenizer=tokenizer)
        student, _ = build_student(model, CompressOptions(method="quant"), ["quant"])
        out[arch] = save_packed(student, tokenizer, tmp_path_factory.mktemp(f"packed-{arch}"), {"method": "quant"})
    return out


def _config(edit):
    def apply(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        edit(config)
        (d / "config.json").write_text(json.dumps(config))
    return apply


def _tensors(edit):
    def apply(d: Path) -> None:
        tensors = load_file(d / "model.safetensors")
        edit(tensors)
        save_file(tensors, d / "model.safetensors")
    return apply


def _truncate(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


LLAMA_NORM = "model.layers.0.input_layernorm.weight"
LLAMA_UP = "model.layers.1.mlp.up_proj.weight.packed"

# (arch, corruption, what the message names)
CASES = {
    "config missing": ("llama", lambda d: (d / "config.json").unlink(), "no config.json"),
    "config not JSON": ("llama", lambda d: (d / "config.json").write_text("{not json"), "unreadable config.json"),
    "config not an object": ("llama", lambda d: (d / "config.json").write_text("[1, 2]"), "not a JSON object"),
    "unknown architecture": ("llama", _config(lambda c: c.update(model_type="bert")), "unsupported architecture 'bert'"),
    "newer format version": ("llama", _config(lambda c: c["xtc"].update(version=99)), "newer than this xtc"),
    "format version not a number": ("llama", _config(lambda c: c["xtc"].update(version="two")), "unknown packed format"),
    "quant section not an object": ("llama", _config(lambda c: c["xtc"].update(quant=[1])), "`xtc.quant`"),
    "quant entry malformed": ("llama", _config(lambda c: c["xtc"]["quant"].update({"model.layers.0.mlp.up_proj": {"levels": 999}})),
                              "model.layers.0.mlp.up_proj"),
    "act_bits not a bit width": ("llama", _config(lambda c: c["xtc"].update(act_bits="8")), "`xtc.act_bits`"),
    "layer count not a number": ("llama", _config(lambda c: c.update(num_hidden_layers="two")), "num_hidden_layers"),
    "zero heads": ("llama", _config(lambda c: c.update(num_attention_heads=0)), "num_attention_heads"),
    "more layers than tensors": ("llama", _config(lambda c: c.update(num_hidden_layers=5)), "missing tensor"),
    "vocabulary larger than the table": ("llama", _config(lambda c: c.update(vocab_size=2048)), "model.embed_tokens"),
    "tensor file truncated": ("llama", _truncate, "corrupt or unreadable model.safetensors"),
    "tensor file missing": ("llama", lambda d: (d / "model.safetensors").unlink(), "no safetensors weights"),
    "tensor missing": ("llama", _tensors(lambda t: t.pop(LLAMA_UP)), f"missing tensor {LLAMA_UP}"),
    "packed codes of the wrong shape": ("llama", _tensors(lambda t: t.update({LLAMA_UP: np.zeros((192, 4), np.uint8)})),
                                        "model.layers.1.mlp.up_proj"),
    "norm of the wrong shape": ("llama", _tensors(lambda t: t.update({LLAMA_NORM: np.ones(10, np.float32)})), LLAMA_NORM),
    "final norm of the wrong shape": ("llama", _tensors(lambda t: t.update({"model.norm.weight": np.ones((64, 2), np.float32)})),
                                      "model.norm.weight"),
    "bias of the wrong shape": ("gpt2", _tensors(lambda t: t.update({"transformer.h.0.attn.c_attn.bias": np.ones(7, np.float32)})),
                                "transformer.h.0.attn.c_attn.bias"),
    "fewer positions than the config": ("gpt2", _config(lambda c: c.update(n_positions=4096)), "transformer.wpe"),
    "tokenizer missing": ("llama", lambda d: (d / "tokenizer.json").unlink(), "tokenizer"),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def broken(request, packed, tmp_path) -> tuple[Path, str]:
    arch, corrupt, needle = CASES[request.param]
    d = tmp_path / "broken"
    shutil.copytree(packed[arch], d)
    corrupt(d)
    return d, needle


def test_the_intact_models_load(packed):
    from xtc.infer.runtime import load_runtime

    for d in packed.values():
        assert load_runtime(str(d)).loader == "direct"


def test_the_loader_says_what_is_broken_in_one_line(broken):
    from xtc.infer.runtime import load_runtime

    d, needle = broken
    with pytest.raises(XtcError) as info:
        load_runtime(str(d))
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def test_xtc_bench_exits_1_with_one_line(broken, capsys):
    d, needle = broken
    code = main(["bench", "--model", str(d), "--prompt-tokens", "8", "--new-tokens", "1", "--repeats", "1"])
    out, err = capsys.readouterr()
    assert code == 1 and not out, out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and needle in err, err
