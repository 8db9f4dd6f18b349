"""GPTQ as the start of block-wise training: lower output error than round-to-nearest on correlated
inputs, codes on the quantiser's grid, and `compress --init gptq` end to end on a tiny model."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from xtc.cli import main
from xtc.train import arch as archs
from xtc.train.cache import create_cache, fill_cache, windows_of
from xtc.train.data import build_corpus
from xtc.train.gptq import gptq_quantize, hessians, init_layer
from xtc.train.quant import QuantLinear, _grouped, codes_of, dequantize, init_scale_min, quantize_linears, quantizer


def correlated_inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5
    scales = torch.logspace(0, -1.5, cols)  # a few inputs carry most of the energy, as in real layers
    return (torch.randn(n, cols, generator=g) * scales) @ (torch.eye(cols) + 2 * mix)


def rtn(w: torch.Tensor, q) -> torch.Tensor:
    scale, minimum = init_scale_min(w, q)
    return dequantize(codes_of(_grouped(w, q.group), scale, minimum, q.levels), scale, minimum).reshape(w.shape)


def output_error(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    return float((x @ w.T - x @ wq.T).norm())


@pytest.mark.parametrize("fmt", ["int3", "int2"])
@pytest.mark.parametrize("group", [None, 32])
def test_gptq_has_clearly_less_output_error_than_round_to_nearest(fmt, group):
    x = correlated_inputs(2048, 128)
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(1)) * 0.05
    q = quantizer(fmt, group)
    codes, scale, minimum = gptq_quantize(w, 2 * x.T @ x / len(x), q)
    wq = dequantize(_grouped(codes.float(), group), scale, minimum).reshape(w.shape)
    assert output_error(x, w, wq) < 0.8 * output_error(x, w, rtn(w, q))
    # and it is a different rounding, not RTN under another name
    assert not torch.equal(wq, rtn(w, q))


@pytest.mark.parametrize("fmt,group", [("int3", 16), ("int2", None), ("ternary", 16), ("binary", None)])
def test_gptq_codes_lie_on_the_quantisers_grid(fmt, group):
    x = correlated_inputs(512, 64)
    linear = nn.Linear(64, 24)
    q = quantizer(fmt, group)
    codes, scale, minimum = gptq_quantize(linear.weight, 2 * x.T @ x / len(x), q)
    assert codes.dtype == torch.uint8 and int(codes.max()) < q.levels
    assert scale.shape == minimum.shape == (24, 64 // (group or 64))
    # scales and mins are fp16 values, as stored
    assert torch.equal(scale, scale.half().float()) and torch.equal(minimum, minimum.half().float())
    layer = QuantLinear(linear, q, act_bits=8)
    layer.load_packed(codes, scale, minimum)
    assert torch.equal(layer.codes(), codes)  # what the layer trains from and packs is GPTQ's rounding
    grid = dequantize(_grouped(codes.float(), group), scale, minimum).reshape(codes.shape)
    assert torch.equal(layer.quantized_weight().detach(), grid)


def test_gptq_does_not_depend_on_how_columns_are_batched(monkeypatch):
    from xtc.train import gptq

    x = correlated_inputs(512, 96)
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(2))
    h = 2 * x.T @ x / len(x)
    whole = gptq_quantize(w, h, quantizer("int3", None))
    monkeypatch.setattr(gptq, "LAZY", 7)
    assert torch.equal(gptq_quantize(w, h, quantizer("int3", None))[0], whole[0])


def test_layer_init_lowers_the_error_of_every_linear_on_the_cached_inputs(tiny_dirs, arch, corpus_dir, tokenizer,
                                                                         tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    windows = windows_of(build_corpus([corpus_dir], tokenizer, max_tokens=4096).train, 32, 8)
    cache = fill_cache(create_cache(tmp_path / "cache", windows, len(archs.decoder_layers(teacher)) + 1,
                                    teacher.config.hidden_size, 8), teacher)
    kwargs = archs.layer_kwargs(teacher, 32)
    layers = {}
    for init in ("rtn", "gptq"):
        student = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
        quantize_linears(student, quantizer("int2", 16), 8, archs.block_linear_names(student))
        layer = archs.decoder_layers(student)[0]
        if init == "gptq":
            init_layer(layer, cache.hidden[0], kwargs)
        layers[init] = layer
    h = hessians(layers["rtn"], cache.hidden[0], kwargs)
    fp32 = archs.decoder_layers(teacher)[0]
    for name, m in layers["gptq"].named_modules():
        if isinstance(m, QuantLinear):
            w = archs.as_linear(fp32.get_submodule(name)).weight.detach()

            def err(wq):  # trace((W - Q) H (W - Q)^T): the output error on the cached inputs
                d = (w - wq).double()
                return float(torch.einsum("ij,jk,ik->", d, h[name].double(), d))

            rtn_q = layers["rtn"].get_submodule(name).quantized_weight().detach()
            assert err(m.quantized_weight().detach()) < err(rtn_q), name


@pytest.mark.slow
def test_compress_with_gptq_init_runs_end_to_end_and_records_its_time(tiny_dirs, corpus_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["compress", "--teacher", str(tiny_dirs["llama"]), "--method", "hybrid", "--data", str(corpus_dir),
                 "--out", str(out), "--steps", "3", "--seq-len", "32", "--batch-size", "2", "--cache-tokens", "4096",
                 "--weight-format", "int2", "--group-size", "16", "--init", "gptq", "--device", "cpu", "--json"])
    assert code == 0
    summary = json.loads((out / "training" / "summary.json").read_text())
    blocks = next(s for s in summary["stages"] if s["stage"] == "blocks")
    assert blocks["finished"] and blocks["init"] == "gptq" and blocks["init_seconds"] > 0
    rows = json.loads((out / "training" / "blocks.json").read_text())
    assert all(r["init_seconds"] > 0 for r in rows)
    assert np.isfinite(summary["val_perplexity"])


def test_a_bad_init_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse
        main(["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--init", "magic"])
    code, err = exit_.value.code, capsys.readouterr().err
    assert code == 2 and "--init" in err and len(err.strip().splitlines()) == 1


def test_gptq_init_needs_the_blockwise_recipe_and_quantised_layers(capsys, tiny_dirs, corpus_dir, tmp_path):
    for extra in (["--method", "layer"], ["--method", "quant", "--recipe", "xtc"]):
        code = main(["compress", "--teacher", str(tiny_dirs["llama"]), "--data", str(corpus_dir),
                     "--out", str(tmp_path / "o"), "--init", "gptq", *extra])
        err = capsys.readouterr().err
        assert code != 0 and "--init gptq" in err and len(err.strip().splitlines()) == 1


def test_a_run_resumes_only_with_the_init_it_was_started_with(tiny_dirs, corpus_dir, tmp_path):
    from xtc.core.errors import XtcError
    from xtc.train.distill import TrainConfig
    from xtc.train.pipeline import CompressOptions, compress

    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "plan.json").write_text(json.dumps({"windows": 1, "kept": [0], "init": "rtn"}))
    opts = CompressOptions(method="quant", init="gptq", resume=True, cache_tokens=4096,
                           train=TrainConfig(steps=1, seq_len=32))
    with pytest.raises(XtcError, match="started with --init rtn"):
        compress(str(tiny_dirs["llama"]), [corpus_dir], out, opts)


def test_a_resumed_layer_keeps_its_gptq_start_and_its_init_time(tiny_dirs, corpus_dir, tokenizer, tmp_path):
    import time

    from xtc.train.blockwise import BlockConfig, train_blocks
    from xtc.train.reduce import spans

    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    n = len(archs.decoder_layers(teacher))
    windows = windows_of(build_corpus([corpus_dir], tokenizer, max_tokens=4096).train, 32, 8)
    cache = fill_cache(create_cache(tmp_path / "cache", windows, n + 1, teacher.config.hidden_size, 8), teacher)
    kwargs = archs.layer_kwargs(teacher, 32)
    cfg = BlockConfig(4, 2, lr=1e-3, lr_quant=1e-2, init="gptq")

    def student():
        s = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
        quantize_linears(s, quantizer("int2", 16), 8, archs.block_linear_names(s))
        return s

    killed = student()
    stopped = train_blocks(killed, cache, spans(list(range(n)), n), kwargs, cfg, tmp_path / "blocks",
                           deadline=time.monotonic())  # GPTQ done, no step taken
    assert not stopped[0].finished and stopped[0].steps_done == 0 and stopped[0].init_seconds > 0
    start = archs.decoder_layers(killed)[0].self_attn.q_proj.codes()
    fresh = student()
    assert not torch.equal(archs.decoder_layers(fresh)[0].self_attn.q_proj.codes(), start)  # RTN differs
    resumed = train_blocks(fresh, cache, spans(list(range(n)), n), kwargs, BlockConfig(4, 2, init="gptq"),
                           tmp_path / "blocks", deadline=time.monotonic())
    assert resumed[0].init_seconds == stopped[0].init_seconds  # restored, not measured again
    assert torch.equal(archs.decoder_layers(fresh)[0].self_attn.q_proj.codes(), start)
