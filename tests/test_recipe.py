"""The block-wise recipe at tiny scale: the teacher cache, layer choice, block-wise and end-to-end
training, and `compress` under a time budget that a kill interrupts and --resume continues."""

import json
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from xtc.core.format import Quantizer
from xtc.train import arch as archs
from xtc.train.blockwise import BlockConfig, block_loss, train_blocks
from xtc.train.cache import create_cache, fill_cache, open_cache, windows_of
from xtc.train.data import build_corpus
from xtc.train.distill import soft_cross_entropy
from xtc.train.e2e import E2EConfig, select_trainable, topk_cross_entropy, train_end_to_end
from xtc.train.pack import load_packed, save_packed
from xtc.train.pipeline import CompressOptions, compress
from xtc.train.distill import TrainConfig
from xtc.train.quant import quantize_embeddings, quantize_linears, quantizer
from xtc.train.reduce import angular_distances, choose_layers, reduce_layers, spans

SEQ = 32


@pytest.fixture(scope="module")
def windows(corpus_dir, tokenizer):
    corpus = build_corpus([corpus_dir], tokenizer, max_tokens=8192)
    return windows_of(corpus.train, SEQ, 24)


@pytest.fixture()
def teacher(tiny_dirs, arch):
    return AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()


def build(teacher, windows, path, topk=16):
    cache = create_cache(path, windows, len(archs.decoder_layers(teacher)) + 1, teacher.config.hidden_size, topk)
    return fill_cache(cache, teacher)


def test_the_cache_holds_every_block_boundary_and_the_top_logits(teacher, windows, tmp_path):
    cache = build(teacher, windows, tmp_path / "cache")
    ids = torch.from_numpy(windows[:2].astype(np.int64))
    with torch.no_grad():
        out = teacher(input_ids=ids, output_hidden_states=True)
    # the first boundary is what layer 0 reads (the embeddings); the others are layer outputs
    np.testing.assert_allclose(cache.hidden[0, :2], out.hidden_states[0].numpy(), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(cache.hidden[1, :2], out.hidden_states[1].numpy(), rtol=1e-2, atol=1e-2)
    values, indices = out.logits.topk(16, dim=-1)
    assert (cache.topk_ids[:2] == indices.numpy()).mean() > 0.99  # fp16 ties aside
    np.testing.assert_allclose(cache.topk_logits[:2], values.numpy(), rtol=1e-2, atol=1e-2)


def test_a_cache_stopped_by_its_deadline_continues_to_the_same_result(teacher, windows, tmp_path):
    whole = build(teacher, windows, tmp_path / "whole")
    part = create_cache(tmp_path / "part", windows, whole.hidden.shape[0], whole.hidden.shape[-1], 16)
    part = fill_cache(part, teacher, deadline=time.monotonic())  # stopped before the first batch
    assert part.done == 0 and not part.complete
    fill_cache(part, teacher, batch_size=4, deadline=None)
    reopened = open_cache(tmp_path / "part")
    assert reopened.complete
    np.testing.assert_array_equal(reopened.hidden, whole.hidden)
    np.testing.assert_array_equal(reopened.topk_ids, whole.topk_ids)


def test_layer_choice_drops_the_run_that_turns_the_hidden_state_least():
    rng = np.random.default_rng(0)
    states = [rng.standard_normal((2, 8, 16)).astype(np.float16)]
    for layer in range(6):  # layers 2, 3 barely change the state; the others rotate it a lot
        step = 0.01 if layer in (2, 3) else 1.0
        states.append((states[-1] + step * rng.standard_normal((2, 8, 16))).astype(np.float16))
    hidden = np.stack(states)
    assert int(np.argmin(angular_distances(hidden, 2))) == 2
    assert choose_layers(hidden, 4) == [0, 1, 4, 5]
    assert spans([0, 1, 4, 5], 6) == [(0, 1), (1, 4), (4, 5), (5, 6)]  # layer 1 stands for 1..3


def test_block_training_brings_each_quantised_layer_closer_to_its_span(teacher, windows, tokenizer, tmp_path):
    cache = build(teacher, windows, tmp_path / "cache")
    kept = [0, 2, 3]
    student = reduce_layers(teacher, kept)
    quantize_linears(student, quantizer("int2", 16), 8, archs.block_linear_names(student))
    layer_spans = spans(kept, len(archs.decoder_layers(teacher)))
    kwargs = archs.layer_kwargs(teacher, SEQ)
    results = train_blocks(student, cache, layer_spans, kwargs, BlockConfig(30, 4, lr=1e-3, lr_quant=1e-2),
                           tmp_path / "blocks")
    assert [r.finished for r in results] == [True, True, True]
    for r in results:
        first = np.mean([row["loss"] for row in r.log[:5]])
        last = np.mean([row["loss"] for row in r.log[-5:]])
        assert last < first
    # the student's own inputs were kept for the last layer only
    assert sorted(p.name for p in (tmp_path / "blocks").glob("inputs*.npy")) == ["inputs2.npy"]
    # the trained student, packed at its real width, computes exactly what it computed in training
    quantize_embeddings(student, Quantizer(16, 16))
    save_packed(student, tokenizer, tmp_path / "packed", {"method": "hybrid", "kept_layers": kept})
    loaded, _ = load_packed(tmp_path / "packed")
    ids = torch.from_numpy(windows[:2].astype(np.int64))
    with torch.no_grad():
        assert torch.equal(student.eval()(ids).logits, loaded(ids).logits)


def test_a_quantisation_warm_up_starts_from_the_fp32_layer_and_ends_fully_quantised(teacher, windows, tmp_path):
    cache = build(teacher, windows, tmp_path / "cache")
    n = len(archs.decoder_layers(teacher))
    kwargs = archs.layer_kwargs(teacher, SEQ)
    first_losses = {}
    for warmup in (0.0, 0.5):
        student = reduce_layers(teacher, list(range(n)))
        quantize_linears(student, quantizer("int2", 16), None, archs.block_linear_names(student))
        results = train_blocks(student, cache, spans(list(range(n)), n)[:1], kwargs,
                               BlockConfig(10, 4, lr=1e-3, lr_quant=1e-2, inputs="teacher", warmup=warmup),
                               tmp_path / f"blocks{warmup}")
        first_losses[warmup] = results[0].first_loss
        assert {m.blend for m in student.modules() if hasattr(m, "blend")} == {1.0}  # packed as trained
    # the first step of the warm-up sees the unquantised teacher layer: only fp16 cache rounding is left
    assert first_losses[0.5] < 1e-4 < first_losses[0.0]


def test_block_training_continues_after_a_kill(teacher, windows, tmp_path):
    cache = build(teacher, windows, tmp_path / "cache")
    n = len(archs.decoder_layers(teacher))
    layer_spans = spans(list(range(n)), n)
    kwargs = archs.layer_kwargs(teacher, SEQ)
    cfg = BlockConfig(12, 4, lr=1e-3, lr_quant=1e-2)

    def student():
        torch.manual_seed(0)
        s = reduce_layers(teacher, list(range(n)))
        quantize_linears(s, quantizer("int3", 16), 8, archs.block_linear_names(s))
        return s

    whole = student()
    train_blocks(whole, cache, layer_spans, kwargs, cfg, tmp_path / "whole")
    killed = student()
    stopped = train_blocks(killed, cache, layer_spans, kwargs, cfg, tmp_path / "resumed", deadline=time.monotonic())
    assert not stopped[0].finished
    resumed = student()
    train_blocks(resumed, cache, layer_spans, kwargs, cfg, tmp_path / "resumed")
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_top_k_cross_entropy_is_the_soft_cross_entropy_when_k_is_the_vocabulary():
    teacher, student = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    values, ids = teacher.topk(11, dim=-1)
    assert torch.allclose(topk_cross_entropy(student, ids, values), soft_cross_entropy(student, teacher), atol=1e-5)


def test_the_end_to_end_stage_trains_only_what_it_is_told(teacher, windows, tmp_path):
    cache = build(teacher, windows, tmp_path / "cache", topk=32)
    student = reduce_layers(teacher, list(range(len(archs.decoder_layers(teacher)))))
    quantize_linears(student, quantizer("int2", 16), 8, archs.block_linear_names(student))
    quantize_embeddings(student, Quantizer(16, 16))
    select_trainable(student, "scales")
    trained = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trained and all(n.endswith((".scale", ".min", ".bias")) or "norm" in n or "ln_" in n for n in trained)
    latent = {n: p.detach().clone() for n, p in student.named_parameters() if n.endswith(".weight") and p.dim() == 2}
    result = train_end_to_end(student, cache, E2EConfig(20, 4, train="scales", lr_quant=1e-2), tmp_path / "e2e.pt")
    assert result.finished and np.mean([r["loss"] for r in result.log[-5:]]) < np.mean([r["loss"] for r in result.log[:5]])
    assert all(torch.equal(p, dict(student.named_parameters())[n]) for n, p in latent.items())


@pytest.mark.slow
def test_compress_runs_the_recipe_in_its_budget_and_resumes_after_a_kill(tiny_dirs, corpus_dir, tmp_path):
    out = tmp_path / "out"
    common = dict(method="hybrid", keep_layers="auto", student_layers=3, weight_format="int3", group_size=16,
                  embed_bits=4, cache_tokens=4096, keep_checkpoints=True, e2e_steps=10)
    train = dict(seq_len=SEQ, batch_size=4, progress=False)
    # a budget that ends inside the block stage: what a killed run leaves behind
    first = compress(str(tiny_dirs["llama"]), [corpus_dir], out,
                     CompressOptions(**common, train=TrainConfig(steps=150, time_budget_s=2, **train)))
    assert not first["finished"] and (out / "checkpoints" / "plan.json").exists()
    plan = json.loads((out / "checkpoints" / "plan.json").read_text())
    assert len(plan["kept"]) == 3 and plan["block_steps"] == 150
    resumed = compress(str(tiny_dirs["llama"]), [corpus_dir], out,
                       CompressOptions(**common, resume=True, train=TrainConfig(steps=150, **train)))
    assert resumed["finished"] and resumed["kept_layers"] == plan["kept"]
    assert [s["stage"] for s in resumed["stages"]] == ["cache", "blocks", "e2e"]
    assert resumed["val_perplexity"] < 2 * resumed["teacher_val_perplexity"]
    assert resumed["stages"][-1]["val_perplexity_before"] > 0  # what the end-to-end stage bought
    model, _ = load_packed(out)  # the packed student loads, with the format it was trained in
    assert {m.quantizer.levels for m in model.modules() if hasattr(m, "quantizer")} == {8, 16}
    assert (out / "training" / "loss_curve.png").stat().st_size > 1000


def test_block_loss_weighs_every_token_alike():
    target = torch.ones(1, 2, 4)
    target[0, 0] *= 1000  # an attention-sink token with a huge activation
    out = target.clone()
    out[0, 1] += 0.5  # the ordinary token is off by half its size
    assert block_loss(out, target) == pytest.approx(0.125)  # (0 + 0.25) / 2: the sink does not drown it
