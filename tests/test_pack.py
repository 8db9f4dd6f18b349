"""The packed directory: real bit widths on disk, and an exact round trip."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny import build_config
from xtc.core.format import model_tensors, weight_files_mb
from xtc.train.pack import load_packed, save_packed
from xtc.train.pipeline import CompressOptions, build_student, fp32_megabytes
from xtc.train.quant import QuantLinear, quantize_model, quantizer


@pytest.mark.parametrize("fmt,bits", [("binary", 1), ("ternary", 2), ("int2", 2), ("int3", 3), ("int4", 4)])
def test_a_k_bit_layer_costs_k_bits_per_weight(tiny_dirs, fmt, bits):
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    quantize_model(model, quantizer(fmt, 32), 8)
    tensors = model_tensors(model)
    name = next(n for n, m in model.named_modules() if isinstance(m, QuantLinear))
    layer = model.get_submodule(name)
    codes = [k for k in tensors if k.startswith(f"{name}.weight.packed")]
    assert sum(tensors[k].nbytes for k in codes) * 8 == bits * layer.out_features * layer.in_features
    for part in ("scale", "min"):
        assert tensors[f"{name}.weight.{part}"].dtype == np.float16
        assert tensors[f"{name}.weight.{part}"].shape == (layer.out_features, layer.in_features // 32)
    assert not {f"{name}.weight", f"{name}.scale", f"{name}.min"} & set(tensors)  # no fp32 copy sneaks in


@pytest.mark.parametrize("method,fmt", [("quant", "binary"), ("hybrid", "binary"), ("layer", "binary"),
                                        ("quant", "ternary"), ("quant", "int2"), ("quant", "int3"), ("hybrid", "int4")])
def test_loading_a_packed_model_gives_exactly_the_students_logits(tiny_dirs, arch, tokenizer, tmp_path, method, fmt):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    opts = CompressOptions(method=method, embed_bits=8, weight_format=fmt, group_size=32 if fmt != "binary" else None)
    student, kept = build_student(teacher, opts, ["layer", "quant"] if method == "hybrid" else [method])
    with torch.no_grad():  # move the latent weights away from the teacher's, as training would
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_packed(student, tokenizer, tmp_path, {"method": method, "kept_layers": kept})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["xtc"]["method"] == method and config["xtc"]["kept_layers"] == kept
    assert config["xtc"]["version"] == 2
    quant = config["xtc"]["quant"]
    if method != "layer":  # every quantised tensor is described: levels and group
        assert {q["levels"] for n, q in quant.items() if "layers" in n or ".h." in n} == {
            {"binary": 2, "ternary": 3, "int2": 4, "int3": 8, "int4": 16}[fmt]}
    loaded, _ = load_packed(tmp_path)
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        assert torch.equal(student.eval()(ids).logits, loaded(ids).logits)


def test_four_bit_embeddings_round_trip(tiny_dirs, tokenizer, tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    student, _ = build_student(teacher, CompressOptions(method="quant", embed_bits=4), ["quant"])
    save_packed(student, tokenizer, tmp_path, {"method": "quant"})
    loaded, _ = load_packed(tmp_path)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(student.eval()(ids).logits, loaded(ids).logits)


def test_size_targets_on_a_gpt2_teacher_of_12_layers_width_256_vocab_4k(tmp_path, tokenizer):
    teacher = AutoModelForCausalLM.from_config(build_config("gpt2", 4096, layers=12, width=256, heads=4, positions=1024))
    teacher.save_pretrained(tmp_path / "teacher")
    teacher_mb = weight_files_mb(tmp_path / "teacher")
    assert teacher_mb == pytest.approx(fp32_megabytes(teacher), rel=0.01)
    ratios = {}
    for method in ("hybrid", "quant"):
        student, kept = build_student(teacher, CompressOptions(method=method), ["layer", "quant"] if method == "hybrid" else ["quant"])
        save_packed(student, tokenizer, tmp_path / method, {"method": method, "kept_layers": kept})
        ratios[method] = teacher_mb / weight_files_mb(tmp_path / method)
    assert ratios["hybrid"] >= 15, ratios
    assert ratios["quant"] >= 12, ratios
