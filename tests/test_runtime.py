"""The CPU runtime: same numbers as transformers, prefix reuse, cache cropping, packed loading.

Every comparison runs twice: on the compiled kernels (when this machine can build them) and on
the numpy fallback, so both paths stay correct.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.tiny import build_model
from xtc.core.errors import XtcError
from xtc.core.format import weight_files_mb
from xtc.infer import kernels as _kernels  # tests take a `kernels` parameter
from xtc.infer.layers import BinaryLinear, Kernels
from xtc.infer.runtime import Runtime, load_runtime
from xtc.infer.tokenizer import FastTokenizer
from xtc.train import pack
from xtc.train.arch import block_linear_names
from xtc.train.quant import quantize_model, quantizer

TEXT = ("def greet(name, punctuation='!'):\n    greeting = 'hello ' + name\n    return greeting.upper() + punctuation\n\n\n"
        "class Counter:\n    def __init__(self):\n        self.count = 0\n\n    def add(self, n=1):\n        self.count += n\n")
HAVE_KERNELS = _kernels.load() is not None
KERNELS = [pytest.param(True, id="kernels",
                        marks=pytest.mark.skipif(not HAVE_KERNELS, reason=f"no kernels: {_kernels.error}")),
           pytest.param(False, id="numpy")]
VARIANTS = {"plain": None, "w1a8": ("binary", 8, None), "w1a8-g32": ("binary", 8, 32), "w2a8": ("ternary", 8, None),
            "w1a32": ("binary", None, None), "int2a8-g32": ("int2", 8, 32), "int3a8-g32": ("int3", 8, 32),
            "int4a8-g32": ("int4", 8, 32),
            # formats per matrix, as `--target-mb` allocates them (GPT-2 and Llama names); the rest int2
            "mixed-a8-g32": ({"attn.c_attn": "int4", "mlp.c_proj": "int3", "c_fc": "binary", "v_proj": "int4",
                              "k_proj": "int3", "down_proj": "int3", "gate_proj": "binary"}, 8, 32)}


def variant_quantizers(model, formats: str | dict[str, str], group: int | None):
    """One Quantizer for all block linears, or one per matrix from {name suffix: format} (else int2)."""
    if isinstance(formats, str):
        return quantizer(formats, group)
    return {n: quantizer(next((f for key, f in formats.items() if n.endswith(key)), "int2"), group)
            for n in block_linear_names(model)}


@pytest.fixture(scope="module")
def models(tokenizer):
    """(arch, variant) -> model: tiny GPT-2 and Llama, plain and quantised (XTC's quantisers)."""
    out = {}
    for arch in ("gpt2", "llama"):
        base, _ = build_model(arch, layers=4, width=64, heads=4, seed=0, tokenizer=tokenizer)
        for name, q in VARIANTS.items():
            out[arch, name] = base if q is None else quantize_model(copy.deepcopy(base), variant_quantizers(base, q[0], q[2]), q[1])
    return out


@pytest.fixture(scope="module")
def hf_dirs(models, tokenizer, tmp_path_factory):
    """arch -> the plain tiny model saved as a Hugging Face directory."""
    out = {}
    for arch in ("gpt2", "llama"):
        out[arch] = tmp_path_factory.mktemp(f"hf-{arch}")
        models[arch, "plain"].save_pretrained(out[arch])
        tokenizer.save_pretrained(out[arch])
    return out


def close(actual: np.ndarray, desired: np.ndarray, quantised_acts: bool) -> None:
    """Equal up to float rounding. With 8-bit activations, a rounding difference of 1e-7 can move
    one activation code by one step now and then (as any two correct implementations do), so
    those compare at 1% of the logits' scale; a real bug is off by the scale itself."""
    atol = 0.01 * float(np.abs(desired).max()) if quantised_acts else 1e-4
    np.testing.assert_allclose(actual, desired, rtol=1e-3, atol=atol)


def reference_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def greedy(next_logits, ids: list[int], n: int) -> list[int]:
    out = []
    logits = next_logits(ids, None)
    for _ in range(n):
        token = int(np.argmax(logits))
        out.append(token)
        logits = next_logits(ids + out, token)
    return out


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arch_name", ["gpt2", "llama"])
def test_logits_equal_transformers(models, tokenizer, arch_name, variant, kernels):
    model = models[arch_name, variant]
    ids = tokenizer(TEXT)["input_ids"][:48]
    ref = reference_logits(model, ids)
    rt = Runtime(model, tokenizer, kernels=kernels)
    assert rt.uses_kernels == kernels
    acts = VARIANTS[variant] is not None and VARIANTS[variant][1] is not None
    close(rt.forward(ids, all_logits=True), ref, acts)
    rt.reset()
    close(rt.prefill(ids), ref[-1], acts)  # the last layer runs on the last token only
    rt.reset()
    rt.prefill(ids[:40])
    for i, token in enumerate(ids[40:]):  # token by token through the cache
        close(rt.step(token), ref[40 + i], acts)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("arch_name", ["gpt2", "llama"])
def test_packed_directory_loads_directly_and_matches_the_student(models, tokenizer, tmp_path, arch_name, kernels):
    student = models[arch_name, "w1a8"]
    pack.save_packed(student, tokenizer, tmp_path / "packed", {"method": "quant"})
    rt = load_runtime(str(tmp_path / "packed"))
    assert rt.loader == "direct"  # no transformers model was built
    assert isinstance(rt.tokenizer, FastTokenizer)
    assert all(isinstance(b.qkv, BinaryLinear) for b in rt.blocks)  # weights stay bit-packed
    if not kernels:
        rt = Runtime(None, rt.tokenizer, spec=rt.spec, kernels=False)
    ids = tokenizer(TEXT)["input_ids"][:40]
    close(rt.forward(ids, all_logits=True), reference_logits(student, ids), True)

    rt.reset()
    ours = greedy(lambda seq, tok: rt.prefill(seq) if tok is None else rt.step(tok), ids, 12)
    theirs = greedy(lambda seq, tok: reference_logits(student, seq)[-1], ids, 12)
    assert ours == theirs


@pytest.mark.parametrize("arch_name", ["gpt2", "llama"])
def test_hugging_face_directory_loads_directly(hf_dirs, tokenizer, arch_name):
    from transformers import AutoModelForCausalLM

    rt = load_runtime(str(hf_dirs[arch_name]))
    assert rt.loader == "direct"
    model = AutoModelForCausalLM.from_pretrained(hf_dirs[arch_name]).eval()
    ids = tokenizer(TEXT)["input_ids"][:40]
    np.testing.assert_allclose(rt.forward(ids, all_logits=True), reference_logits(model, ids), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kernels", KERNELS)
def test_prefix_reuse_gives_the_same_logits_as_a_fresh_prefill(models, tokenizer, kernels):
    rt = Runtime(models["llama", "w1a8"], tokenizer, kernels=kernels)
    ids = tokenizer(TEXT)["input_ids"][:60]
    fresh = rt.prefill(ids)
    rt.reset()
    rt.prefill(ids[:35])
    rt.step(ids[35])
    reused = rt.prefill(ids)  # re-reads only ids[36:]
    np.testing.assert_allclose(reused, fresh, rtol=1e-5, atol=1e-5)
    assert rt.cache.tokens == ids and rt.cache.length == len(ids)
    again = rt.prefill(ids)  # identical prompt: the last token is re-fed for its logits
    np.testing.assert_allclose(again, fresh, rtol=1e-5, atol=1e-5)
    assert rt.cache.length == len(ids)


@pytest.mark.parametrize("kernels", KERNELS)
def test_cache_crops_when_the_prompt_changes_mid_way(models, tokenizer, kernels):
    model = models["gpt2", "w1a8"]
    rt = Runtime(model, tokenizer, kernels=kernels)
    a = tokenizer(TEXT)["input_ids"][:30]
    b = tokenizer("x = [i * i for i in range(10)]\nprint(x)\n")["input_ids"]
    c = tokenizer("while True:\n    break\n")["input_ids"]
    rt.prefill(a + b)
    for token in c[:3]:
        rt.step(token)  # generated tokens sit in the cache too
    logits = rt.prefill(a + c)
    assert rt.cache.tokens == a + c and rt.cache.length == len(a + c)
    close(logits, reference_logits(model, a + c)[-1], True)
    shorter = rt.prefill(a[:10])  # deleting text: the cache shrinks to the shorter prompt
    assert rt.cache.tokens == a[:10]
    close(shorter, reference_logits(model, a[:10])[-1], True)


def test_context_overflow_raises_value_error(models, tokenizer):
    rt = Runtime(models["llama", "w1a8"], tokenizer, max_context=32)
    ids = tokenizer(TEXT)["input_ids"]
    assert len(ids) > 32
    with pytest.raises(ValueError):
        rt.prefill(ids[:40])
    rt.reset()
    rt.prefill(ids[:32])
    with pytest.raises(ValueError):
        rt.step(ids[32])
    with pytest.raises(ValueError):
        rt.prefill([])
    assert Runtime(models["gpt2", "plain"], tokenizer, max_context=10_000).max_context == 512  # the model's limit


@pytest.mark.parametrize("kernels", KERNELS)
def test_a_context_longer_than_the_rotary_tables_is_refused(hf_dirs, tokenizer, kernels):
    """The rotary tables are built with the spec: a runtime asking for more context than they
    cover is refused when it is made (the kernel would read past their end at position 16)."""
    from xtc.infer.spec import spec_from_directory

    spec = spec_from_directory(hf_dirs["llama"], 16)
    with pytest.raises(ValueError, match="rotary tables cover 16 positions"):
        Runtime(None, tokenizer, spec=spec, max_context=64, kernels=kernels)
    rt = Runtime(None, tokenizer, spec=spec, max_context=16, kernels=kernels)
    ids = tokenizer(TEXT)["input_ids"]
    assert rt.prefill(ids[:16]).shape == (len(tokenizer),)
    with pytest.raises(ValueError):
        rt.step(ids[16])
    gpt2 = spec_from_directory(hf_dirs["gpt2"], 16)  # learned positions: the model's own limit applies
    assert Runtime(None, tokenizer, spec=gpt2, max_context=64, kernels=kernels).max_context == 64


@pytest.mark.skipif(not HAVE_KERNELS, reason="no compiled kernels on this machine")
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 13])
@pytest.mark.parametrize("width,group", [(64, None), (200, None), (1536, None), (128, 32), (256, 64)])
def test_binary_kernel_matches_dense_math(rows, width, group):
    """The bit-packed kernel (matrix-vector for few rows, matrix-matrix for more) against the
    quantised product in plain numpy, for padded widths and grouped scales, with a bias."""
    rng = np.random.default_rng(rows * width)
    w = rng.standard_normal((37, width)).astype(np.float32)
    codes = np.where(w >= 0, 1, -1).astype(np.int8)  # XTC's binary weights: alpha * sign(w)
    scale = np.abs(w).reshape(37, -1, group or width).mean(-1).astype(np.float16).astype(np.float32)
    bias = rng.standard_normal(37).astype(np.float32)
    lin = BinaryLinear.from_codes(codes, scale, bias)
    x = (rng.standard_normal((rows, width)) * 3).astype(np.float32)
    got = lin(x, Kernels(_kernels.load()))
    ref = lin(x, None)  # numpy: quantise, dense dequantised weights
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_fast_tokenizer_agrees_with_transformers(hf_dirs):
    from transformers import AutoTokenizer

    d = hf_dirs["llama"]
    ours, theirs = FastTokenizer(d), AutoTokenizer.from_pretrained(d)
    assert len(ours) == len(theirs)
    assert ours(TEXT, add_special_tokens=False)["input_ids"] == theirs(TEXT, add_special_tokens=False)["input_ids"]
    assert [ours.decode([i]) for i in range(len(ours))] == [theirs.decode([i]) for i in range(len(theirs))]
    assert ours.convert_ids_to_tokens(list(range(50))) == theirs.convert_ids_to_tokens(list(range(50)))
    assert ours.eos_token_id == theirs.eos_token_id
    assert set(ours.all_special_ids) == set(theirs.all_special_ids)
    assert ours.convert_tokens_to_ids("<|endoftext|>") == theirs.convert_tokens_to_ids("<|endoftext|>")
    ids = theirs(TEXT)["input_ids"]
    assert ours.decode(ids) == theirs.decode(ids)


def test_packed_runtime_never_imports_torch(models, tokenizer, tmp_path):
    """What keeps the runtime small: loading and running a packed model needs numpy only."""
    pack.save_packed(models["llama", "w1a8"], tokenizer, tmp_path / "packed", {"method": "quant"})
    code = ("import sys\nfrom xtc.infer.runtime import load_runtime\nfrom xtc.infer.complete import Completer\n"
            f"rt = load_runtime({str(tmp_path / 'packed')!r})\n"
            "Completer(rt).complete('def add(a, b):\\n    return ', max_new_tokens=4)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_run_bench_reports_the_spec_fields(models, tokenizer, tmp_path):
    from xtc.eval.speed import run_bench

    pack.save_packed(models["gpt2", "w1a8"], tokenizer, tmp_path / "packed", {"method": "quant"})
    r = run_bench(str(tmp_path / "packed"), prompt_text=TEXT * 4, prompt_tokens=64, new_tokens=5, repeats=2)
    for key in ("model", "disk_mb", "rss_mb", "prefill_tokens_per_s", "decode_tokens_per_s", "latency_ms",
                "warm_latency_ms"):
        assert key in r
    assert 60 <= r["prompt_tokens"] <= 66
    assert r["disk_mb"] == pytest.approx(weight_files_mb(tmp_path / "packed"), abs=0.01)
    assert 0 < r["warm_latency_ms"] and 0 < r["latency_ms"] and r["rss_mb"] > 0
    assert r["loader"] == "direct"


@pytest.mark.skipif(not HAVE_KERNELS, reason="no compiled kernels on this machine")
def test_thread_count_holds_on_worker_threads(models, tokenizer):
    """The language server runs inference on a worker thread: it must get the threads asked for."""
    import threading

    torch_threads = torch.get_num_threads()
    lib = _kernels.load()
    try:
        for threads in (1, 2):
            Runtime(models["llama", "w1a8"], tokenizer, threads=threads)
            seen = []
            worker = threading.Thread(target=lambda: seen.append(lib.xtc_threads_used()))
            worker.start()
            worker.join()
            assert seen == [threads] and lib.xtc_threads_used() == threads
    finally:
        torch.set_num_threads(torch_threads)
        lib.xtc_set_threads(Runtime(models["llama", "plain"], tokenizer).threads)


def test_the_rotary_base_is_read_from_either_config_spelling_and_other_rotary_types_are_refused():
    from xtc.export.gguf import _rope_theta
    from xtc.infer.spec import Unsupported, rope_theta

    assert rope_theta({}) == 10000.0
    assert rope_theta({"rope_theta": 100000.0}) == 100000.0
    assert rope_theta({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}) == 5e5
    for config in ({"rope_scaling": {"type": "linear", "factor": 2.0}}, {"partial_rotary_factor": 0.5}):
        with pytest.raises(Unsupported):
            rope_theta(config)
        with pytest.raises(XtcError, match="GGUF export: rope type"):
            _rope_theta(config)
