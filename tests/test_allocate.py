"""Bit widths by measured sensitivity (`--target-mb`): the measurement, the knapsack, the size it
promises, and the recipe that trains and packs the mixed student."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from xtc.core.errors import XtcError
from xtc.core.format import Quantizer, weight_files_mb
from xtc.train import arch as archs
from xtc.train.allocate import allocate, ladder, layer_sensitivity, measure, packed_megabytes
from xtc.train.distill import TrainConfig
from xtc.train.pack import load_packed, save_packed
from xtc.train.pipeline import CompressOptions, compress
from xtc.train.quant import quantize_embeddings, quantize_linears, quantizer
from xtc.train.reduce import reduce_layers

GROUP = 16
EMBED = Quantizer(16, 16)


@pytest.fixture()
def student(tiny_dirs):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    return reduce_layers(teacher, list(range(len(archs.decoder_layers(teacher)))))


def inputs_of(student, n=2, seq=32):
    """Each layer's input on random token windows (what the teacher cache holds)."""
    ids = torch.randint(0, student.config.vocab_size, (n, seq), generator=torch.Generator().manual_seed(0))
    states, _ = archs.boundary_states(student, ids)
    return [s.numpy() for s in states[:-1]], archs.layer_kwargs(student, seq)


def test_the_ladder_runs_from_the_base_format_up():
    assert ladder("int2") == ["int2", "int3", "int4"]
    assert ladder("binary", "int2") == ["binary", "ternary", "int2"]
    with pytest.raises(XtcError):
        ladder("int4")


def test_fewer_bits_damage_a_layer_more_and_the_layer_is_left_as_it_was(student):
    inputs, kwargs = inputs_of(student)
    layer = archs.decoder_layers(student)[0]
    before = {n: p.clone() for n, p in layer.state_dict().items()}
    errors = layer_sensitivity(layer, torch.from_numpy(inputs[0]), kwargs, ["int2", "int3", "int4"], GROUP, 8)
    assert set(errors) == {n for n, m in layer.named_modules() if archs.is_linear(m)}
    for by_format in errors.values():
        assert by_format["int2"] > by_format["int3"] > by_format["int4"] > 0
    after = layer.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[n], before[n]) for n in before)


def test_the_budget_goes_to_the_matrices_that_buy_the_most_error_per_byte(student):
    names = archs.block_linear_names(student)
    errors = {n: {"int2": 1.0, "int3": 0.99, "int4": 0.98} for n in names}
    sensitive = names[3]
    errors[sensitive] = {"int2": 100.0, "int3": 1.0, "int4": 0.1}
    base = packed_megabytes(student, {n: quantizer("int2", GROUP) for n in names}, EMBED)
    shape = archs.as_linear(student.get_submodule(sensitive)).weight.shape
    one_bit_more = shape[0] * shape[1] / 8 / 1e6  # int2 -> int3 of that matrix
    target = base + 2.001 * one_bit_more
    chosen = allocate(student, errors, ["int2", "int3", "int4"], GROUP, EMBED, target)
    assert chosen.formats[sensitive] == "int4"  # its two upgrades beat every other matrix's first
    assert chosen.megabytes == pytest.approx(base + 2 * one_bit_more)
    assert all(f == "int2" for n, f in chosen.formats.items() if n != sensitive)
    everything = allocate(student, errors, ["int2", "int3", "int4"], GROUP, EMBED, 1e9)
    assert set(everything.formats.values()) == {"int4"}
    with pytest.raises(XtcError, match="over the"):
        allocate(student, errors, ["int2", "int3", "int4"], GROUP, EMBED, base / 2)


def test_a_wider_format_of_the_same_size_is_taken_for_free(student):
    names = archs.block_linear_names(student)
    errors = {n: {"binary": 3.0, "ternary": 2.0, "int2": 1.0} for n in names}
    errors[names[0]] = {"binary": 300.0, "ternary": 200.0, "int2": 100.0}
    base = packed_megabytes(student, {n: quantizer("binary", GROUP) for n in names}, EMBED)
    matrix = archs.as_linear(student.get_submodule(names[0])).weight
    one_bit_more = matrix.numel() / 8 / 1e6  # binary -> ternary: 1 to 2 bits; ternary -> int2: none
    chosen = allocate(student, errors, ["binary", "ternary", "int2"], GROUP, EMBED, base + 1.001 * one_bit_more)
    assert chosen.formats[names[0]] == "int2"


def test_the_promised_size_is_the_packed_size(student, tmp_path, tokenizer):
    inputs, kwargs = inputs_of(student)
    errors = measure(student, inputs, kwargs, ["int2", "int3", "int4"], GROUP, 8)
    base = packed_megabytes(student, {n: quantizer("int2", GROUP) for n in errors}, EMBED)
    chosen = allocate(student, errors, ["int2", "int3", "int4"], GROUP, EMBED, base * 1.3)
    assert len(set(chosen.formats.values())) > 1  # a real mix
    quantize_linears(student, {n: quantizer(f, GROUP) for n, f in chosen.formats.items()}, 8, list(chosen.formats))
    quantize_embeddings(student, EMBED)
    save_packed(student, tokenizer, tmp_path, {})
    assert weight_files_mb(tmp_path) == pytest.approx(chosen.megabytes, rel=0.01)


@pytest.mark.slow
def test_compress_with_a_target_size_trains_and_packs_the_allocated_mix(tiny_dirs, corpus_dir, tmp_path):
    out = tmp_path / "out"
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    target = packed_megabytes(teacher, {n: quantizer("int2", GROUP) for n in archs.block_linear_names(teacher)},
                              EMBED) * 1.2
    opts = CompressOptions(method="quant", weight_format="int2", group_size=GROUP, embed_bits=4, embed_group=16,
                           cache_tokens=2048, e2e="none", target_mb=target,
                           train=TrainConfig(steps=5, seq_len=32, batch_size=4, progress=False))
    summary = compress(str(tiny_dirs["llama"]), [corpus_dir], out, opts)
    report = json.loads((out / "training" / "allocation.json").read_text())
    assert summary["packed_mb"] <= target and summary["allocation"] == report["by_matrix"]
    model, _ = load_packed(out)
    stored = {n: m.quantizer.levels for n, m in model.named_modules() if n in report["formats"]}
    assert stored == {n: {"int2": 4, "int3": 8, "int4": 16}[f] for n, f in report["formats"].items()}
    assert len(set(stored.values())) > 1


@pytest.mark.parametrize("change, message", [
    (dict(recipe="xtc"), "needs --recipe blockwise"),
    (dict(method="layer"), "needs --recipe blockwise"),
    (dict(weight_formats={"mlp.down_proj": "int4"}), "not both"),
    (dict(weight_format="int4"), "nothing to allocate"),
])
def test_a_target_size_is_refused_where_it_cannot_apply(tiny_dirs, corpus_dir, tmp_path, change, message):
    opts = CompressOptions(**{"method": "quant", "weight_format": "int2", "target_mb": 1.0, **change})
    with pytest.raises(XtcError, match=message):
        compress(str(tiny_dirs["llama"]), [corpus_dir], tmp_path / "out", opts)
