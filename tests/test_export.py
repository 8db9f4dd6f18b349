"""`xtc export`: a packed student as a Hugging Face directory (transformers loads it, same logits) and
as a GGUF file (read back with the `gguf` package; loaded by transformers' GGUF reader and, where
llama-cpp-python is installed, by llama.cpp itself, with the student's logits within fp16 error)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from tests.test_cli import run
from xtc.train.pack import load_packed, save_packed
from xtc.train.pipeline import CompressOptions, build_student
from xtc.train.quant import QuantLinear

TEXT = "def split(self, text):\n    return [word.strip() for word in text.split(',')]  # 12345 ünï"


def _teacher(tiny_dirs, arch: str):
    """The trained tiny teacher; GPT-2 with 1024 positions (transformers' GGUF reader assumes
    GPT-2's 1024), the first 512 from the trained model."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    if arch == "gpt2":
        config = GPT2Config.from_dict({**model.config.to_dict(), "n_positions": 1024})
        longer = AutoModelForCausalLM.from_config(config)
        state = model.state_dict()
        wpe = longer.transformer.wpe.weight.detach().clone()
        wpe[:512] = state["transformer.wpe.weight"]
        state["transformer.wpe.weight"] = wpe
        longer.load_state_dict(state)
        model = longer
    return model.eval()


@pytest.fixture(scope="module")
def packed(tiny_dirs, tokenizer, tmp_path_factory):
    """arch -> a packed hybrid student: 2 of 4 layers, 3-bit weights in groups of 32 (codes split
    into packed + packed_hi), 4-bit embeddings, 8-bit activations."""
    out = {}
    for arch in ("llama", "gpt2"):
        opts = CompressOptions(method="hybrid", embed_bits=4, weight_format="int3", group_size=32)
        student, kept = build_student(_teacher(tiny_dirs, arch), opts, ["layer", "quant"])
        with torch.no_grad():  # away from the teacher's weights, as training would move them
            for p in student.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        out[arch] = save_packed(student, tokenizer, tmp_path_factory.mktemp(f"packed-{arch}"),
                                {"method": "hybrid", "kept_layers": kept})
    return out


def student_logits(directory, ids: list[int]) -> np.ndarray:
    """The packed student's logits with activation quantisation off: what an export must give."""
    model, _ = load_packed(directory)
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.act_bits = None
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def export(capsys, src, fmt: str, out, *extra: str) -> dict:
    code, stdout, err = run(capsys, "export", str(src), "--format", fmt, "--out", str(out), "--json", *extra)
    assert code == 0, err
    return json.loads(stdout)


# -- Hugging Face ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hf_export_loads_in_transformers_with_the_students_logits(capsys, packed, tokenizer, tmp_path, arch):
    out = tmp_path / "hf"
    summary = export(capsys, packed[arch], "hf", out)
    assert summary["dtype"] == "f32" and summary["layers"] == 2 and summary["dequantized"] > 0
    assert summary["act_bits"] == 8 and "activations" in summary["notes"][0]
    config = json.loads((out / "config.json").read_text())
    assert "xtc" not in config and config["architectures"] == [{"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[arch]]
    assert config["num_hidden_layers" if arch == "llama" else "n_layer"] == 2  # the layer-reduced student's own count
    assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()
    ids = tokenizer(TEXT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    expected = student_logits(packed[arch], ids)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)

    # The runtime reads the export as a plain Hugging Face directory: the same function.
    from xtc.infer.runtime import load_runtime

    rt = load_runtime(str(out))
    np.testing.assert_allclose(rt.forward(ids, all_logits=True), expected, atol=2e-3, rtol=0)


def test_hf_export_in_fp16(capsys, packed, tokenizer, tmp_path):
    out = tmp_path / "hf16"
    export(capsys, packed["llama"], "hf", out, "--dtype", "f16")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "np") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype(np.float16)}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    ids = tokenizer(TEXT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    expected = student_logits(packed["llama"], ids)
    assert np.abs(logits - expected).max() < 0.02 * np.abs(expected).max()


# -- GGUF ----------------------------------------------------------------------------------------------
def read_gguf(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {}
    for key, field in reader.fields.items():
        fields[key] = field.contents()
    return fields, {t.name: t for t in reader.tensors}


EXPECTED_BLOCK_TENSORS = {
    "llama": ["attn_norm.weight", "ffn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
              "attn_output.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"],
    "gpt2": [f"{n}.{s}" for n in ("attn_norm", "ffn_norm", "attn_qkv", "attn_output", "ffn_up", "ffn_down")
             for s in ("weight", "bias")],
}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gguf_export_reads_back_with_the_gguf_package(capsys, packed, tokenizer, tmp_path, arch):
    out = tmp_path / "student.gguf"
    summary = export(capsys, packed[arch], "gguf", out)
    assert summary["dtype"] == "f16" and out.stat().st_size > 0
    fields, tensors = read_gguf(out)
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.block_count"] == 2 and fields[f"{arch}.embedding_length"] == 64
    assert fields[f"{arch}.attention.head_count"] == 4 and fields["general.file_type"] == 1  # mostly F16
    assert "8-bit activations" in fields["general.description"]
    if arch == "llama":
        assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.rope.dimension_count"] == 16
        assert fields["llama.context_length"] == 512 and fields["llama.vocab_size"] == len(tokenizer)
    else:
        assert fields["gpt2.context_length"] == 1024 and fields["gpt2.feed_forward_length"] == 256

    # Tensors: llama.cpp's names, (out, in) as numpy sees them (GGUF lists dims reversed).
    top = {"token_embd.weight", "output_norm.weight"} | (
        {"output_norm.bias", "position_embd.weight", "output.weight"} if arch == "gpt2" else set())
    expected = top | {f"blk.{i}.{n}" for i in range(2) for n in EXPECTED_BLOCK_TENSORS[arch]}
    assert set(tensors) == expected
    vocab = len(tokenizer)
    assert list(tensors["token_embd.weight"].shape) == [64, vocab]
    qkv = "attn_q" if arch == "llama" else "attn_qkv"
    assert list(tensors[f"blk.0.{qkv}.weight"].shape) == [64, 64 if arch == "llama" else 192]
    for name, t in tensors.items():
        assert t.tensor_type.name == ("F16" if len(t.shape) == 2 else "F32"), name

    # The tokenizer: byte-level BPE, every token and merge, the special ids.
    tokenizer_json = json.loads((packed[arch] / "tokenizer.json").read_text())
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == vocab and tokens[0] == "<|endoftext|>"
    assert all(tokens[i] == t for t, i in tokenizer_json["model"]["vocab"].items())
    assert fields["tokenizer.ggml.token_type"][0] == 3  # control: the special token
    assert len(fields["tokenizer.ggml.merges"]) == len(tokenizer_json["model"]["merges"])
    assert fields["tokenizer.ggml.bos_token_id"] == 0 and fields["tokenizer.ggml.eos_token_id"] == 0
    assert fields["tokenizer.ggml.add_bos_token"] is False


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gguf_export_runs_in_transformers_with_the_students_logits(capsys, packed, tokenizer, tmp_path, arch):
    """transformers' GGUF reader undoes llama.cpp's q/k permutation itself: an independent check
    of tensor names, layouts and the permutation."""
    out = tmp_path / "student.gguf"
    export(capsys, packed[arch], "gguf", out, "--dtype", "f32")
    ids = tokenizer(TEXT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(logits, student_logits(packed[arch], ids), atol=1e-4, rtol=0)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)(TEXT, add_special_tokens=False)["input_ids"] == (
        tokenizer(TEXT, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gguf_export_runs_in_llama_cpp_with_the_students_logits(capsys, packed, tokenizer, tmp_path, arch):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional: "
                                    "pip install llama-cpp-python==0.3.36, ~10 min to compile)")
    ids = tokenizer(TEXT)["input_ids"]
    expected = student_logits(packed[arch], ids)
    for dtype, tolerance in (("f16", 0.01 * np.abs(expected).max()), ("f32", 1e-3)):
        out = tmp_path / f"student-{dtype}.gguf"
        export(capsys, packed[arch], "gguf", out, "--dtype", dtype)
        llm = llama_cpp.Llama(str(out), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
        text_ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == text_ids
        llm.eval(ids)
        logits = np.array(llm.scores[:len(ids)])
        # F16: within fp16 rounding of the student's logits (measured: 4e-4 of a range of 3.3); F32: 2e-5.
        assert np.abs(logits - expected).max() < tolerance, dtype
        assert (logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.9, dtype
        llm.close()


def test_an_untied_quantised_head_is_exported_as_its_own_weight(capsys, tokenizer, tmp_path):
    """A packed student whose head has its own table (`lm_head.table`): `lm_head.weight` in the
    Hugging Face export, `output.weight` in the GGUF file."""
    from tests.tiny import build_config

    config = build_config("llama", len(tokenizer))
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        teacher.lm_head.weight.normal_(0, 0.5)
    student, kept = build_student(teacher, CompressOptions(method="quant", embed_bits=8), ["quant"])
    packed_dir = save_packed(student, tokenizer, tmp_path / "packed", {"method": "quant", "kept_layers": kept})
    assert "lm_head.table" in json.loads((packed_dir / "config.json").read_text())["xtc"]["quant"]
    export(capsys, packed_dir, "hf", tmp_path / "hf")
    export(capsys, packed_dir, "gguf", tmp_path / "s.gguf", "--dtype", "f32")
    assert "output.weight" in read_gguf(tmp_path / "s.gguf")[1]
    ids = [5, 17, 42, 7, 99, 3]
    expected = student_logits(packed_dir, ids)
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
        assert not hf.config.tie_word_embeddings
        np.testing.assert_allclose(hf(torch.tensor([ids])).logits[0].numpy(), expected, atol=1e-4, rtol=0)
        gguf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="s.gguf", dtype=torch.float32)
        np.testing.assert_allclose(gguf(torch.tensor([ids])).logits[0].numpy(), expected, atol=1e-4, rtol=0)


# -- other sources -----------------------------------------------------------------------------------------
def test_a_plain_hf_directory_and_a_gguf_file_export_too(capsys, tiny_dirs, tokenizer, tmp_path):
    """An HF directory (numpy route) to GGUF, and that GGUF file (transformers route) back to HF:
    the original model's logits at the end."""
    gguf_file = tmp_path / "teacher.gguf"
    assert export(capsys, tiny_dirs["llama"], "gguf", gguf_file, "--dtype", "f32")["source"] == "hf"
    back = tmp_path / "back"
    summary = export(capsys, gguf_file, "hf", back)
    assert summary["source"] == "gguf" and summary["dequantized"] == 0 and summary["notes"] == []
    ids = tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])(torch.tensor([ids])).logits
        logits = AutoModelForCausalLM.from_pretrained(back)(torch.tensor([ids])).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_safetensors_are_read_without_torch_bf16_included(tmp_path):
    from safetensors.torch import save_file

    from xtc.core.errors import XtcError
    from xtc.export.weights import _directory_tensors

    tensors = {"a": torch.randn(3, 5, dtype=torch.bfloat16), "b": torch.randn(4, dtype=torch.float16),
               "c": torch.arange(6, dtype=torch.int8).reshape(2, 3)}
    save_file(tensors, tmp_path / "m.safetensors")
    read = _directory_tensors(tmp_path)
    for name, value in tensors.items():
        np.testing.assert_array_equal(read[name], value.float().numpy() if name == "a" else value.numpy())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(XtcError, match="corrupt"):
        _directory_tensors(tmp_path / "bad")
    (tmp_path / "fp8").mkdir()
    save_file({"f": torch.zeros(2, dtype=torch.float8_e4m3fn)}, tmp_path / "fp8" / "m.safetensors")
    with pytest.raises(XtcError, match="tensor f"):
        _directory_tensors(tmp_path / "fp8")


def test_exporting_a_packed_student_does_not_import_torch(packed, tmp_path):
    code = (f"import sys\nfrom xtc.cli import main\n"
            f"assert main(['export', {str(packed['llama'])!r}, '--format', 'gguf', '--out', {str(tmp_path / 'a.gguf')!r}]) == 0\n"
            f"assert main(['export', {str(packed['llama'])!r}, '--format', 'hf', '--out', {str(tmp_path / 'hf')!r}]) == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') or m.startswith('xtc.train')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# -- bad input ---------------------------------------------------------------------------------------------
def test_bad_input_gives_one_line_errors(capsys, packed, tmp_path):
    existing = tmp_path / "there.gguf"
    existing.write_bytes(b"x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("x")
    cases = [
        (["export", str(packed["llama"]), "--format", "onnx", "--out", str(tmp_path / "x")], 2, "invalid choice"),
        (["export", str(tmp_path / "missing"), "--format", "gguf", "--out", str(tmp_path / "m.gguf")], 1, "no model"),
        (["export", str(packed["llama"]), "--format", "gguf", "--out", str(existing)], 1, "already exists"),
        (["export", str(packed["llama"]), "--format", "hf", "--out", str(full)], 1, "already exists"),
        (["export", str(packed["llama"]), "--format", "hf", "--out", str(existing)], 1, "already exists"),
        (["export", str(packed["llama"]), "--format", "gguf", "--out", str(tmp_path / "x.bin")], 1, ".gguf"),
        (["export", str(packed["llama"]), "--format", "gguf"], 2, "--out"),
    ]
    for argv, status, needle in cases:
        code, out, err = run(capsys, *argv)
        assert code == status, (argv, err)
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert existing.read_bytes() == b"x" and list(full.iterdir()) == [full / "a"]  # nothing overwritten
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial files left
