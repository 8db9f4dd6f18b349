"""`xtc export SRC --format gguf`: one GGUF file that llama.cpp (and Ollama, LM Studio...) loads.

The file follows llama.cpp's own converter (convert_hf_to_gguf.py) for the two architectures:
- metadata: `general.architecture` (`llama` or `gpt2`) and that architecture's hyperparameters
  (context length, width, block count, feed-forward width, heads, KV heads, RoPE dimension and
  base, norm epsilon, vocabulary size), `general.file_type`, and a description saying where the
  weights come from;
- the tokenizer: `tokenizer.ggml.model = gpt2` (byte-level BPE), the pre-tokenizer (`gpt-2`, or
  `smollm` for SmolLM's digit-splitting one), every token with its type (normal, control for
  special tokens, user-defined for other added tokens, unused for padding rows), the merges, the
  special token ids, whether a BOS/EOS is added, the chat template;
- the tensors under llama.cpp's names (token_embd, blk.N.attn_q/k/v/output, ffn_gate/up/down,
  attn_norm/ffn_norm, output_norm, output; GPT-2: position_embd, attn_qkv, ffn_up/down and the
  norms' biases), matrices in F16 (or F32 with `--dtype f32`), norms and biases in F32. For llama,
  q_proj and k_proj rows are permuted as llama.cpp's rotary embedding expects (pairs of adjacent
  dimensions rather than Hugging Face's two halves). A tied head is left out for llama (llama.cpp
  ties it) and written as `output` for GPT-2, as the converter does.

Only byte-level BPE tokenizers (GPT-2, CodeGPT, SmolLM2) are written; others are refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gguf
import numpy as np

from xtc.core.errors import XtcError
from xtc.export.weights import Weights
from xtc.infer.spec import Unsupported, rope_theta

DTYPES = {"f16": np.float16, "f32": np.float32}


# -- hyperparameters ----------------------------------------------------------------------------------
def _rope_theta(config: dict) -> float:
    try:
        return rope_theta(config)
    except Unsupported as exc:
        raise XtcError(f"GGUF export: {exc} is not supported (only the default rotary embedding)") from None


def _hyperparameters(writer, weights: Weights) -> None:
    c, layout = weights.config, weights.layout
    vocab = weights.vocab_rows()
    if layout.name == "llama":
        d, heads = c["hidden_size"], c["num_attention_heads"]
        head_dim = c.get("head_dim") or d // heads
        writer.add_context_length(int(c.get("max_position_embeddings") or 2048))
        writer.add_embedding_length(d)
        writer.add_block_count(c["num_hidden_layers"])
        writer.add_feed_forward_length(c["intermediate_size"])
        writer.add_head_count(heads)
        writer.add_head_count_kv(c.get("num_key_value_heads") or heads)
        writer.add_rope_freq_base(_rope_theta(c))
        writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
        writer.add_vocab_size(vocab)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != d // heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        if c.get("hidden_act", "silu") != "silu":
            raise XtcError(f"GGUF export: llama with activation {c.get('hidden_act')!r} is not supported (silu only)")
    else:
        if c.get("scale_attn_by_inverse_layer_idx") or not c.get("scale_attn_weights", True):
            raise XtcError("GGUF export: this GPT-2 variant's attention scaling is not supported by llama.cpp")
        d = c["n_embd"]
        writer.add_context_length(int(c.get("n_positions") or c.get("n_ctx") or 1024))
        writer.add_embedding_length(d)
        writer.add_block_count(c["n_layer"])
        writer.add_feed_forward_length(c.get("n_inner") or 4 * d)
        writer.add_head_count(c["n_head"])
        writer.add_layer_norm_eps(float(c.get("layer_norm_epsilon", 1e-5)))


# -- tokenizer ------------------------------------------------------------------------------------------
def _pre_tokenizer(tokenizer: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; XtcError when llama.cpp has none that
    splits text the same way."""

    def byte_level(p) -> bool:
        return isinstance(p, dict) and p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get(
            "add_prefix_space", False)

    pre = tokenizer.get("pre_tokenizer")
    if tokenizer.get("normalizer") is None:
        if byte_level(pre):
            return "gpt-2"
        parts = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
        if (parts and len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits")
                and byte_level(parts[1])):
            return "smollm"
    raise XtcError("GGUF export: only byte-level BPE tokenizers (GPT-2, CodeGPT, SmolLM2) are supported; this "
                   f"tokenizer's pre-tokenizer is {json.dumps(pre)[:120]}")


def _vocabulary(weights: Weights) -> tuple[list[str], list[int], str]:
    """(tokens, token types, pre-tokenizer) for `weights.vocab_rows()` ids."""
    path = weights.tokenizer_dir / "tokenizer.json"
    try:
        tokenizer = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise XtcError(f"{path}: unreadable tokenizer ({exc.__class__.__name__})") from None
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise XtcError(f"GGUF export: only byte-level BPE tokenizers are supported, not {model.get('type')!r}")
    pre = _pre_tokenizer(tokenizer)
    n = weights.vocab_rows()
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [int(gguf.TokenType.UNUSED)] * n
    entries = [(i, text, int(gguf.TokenType.NORMAL)) for text, i in model["vocab"].items()]
    for added in tokenizer.get("added_tokens") or []:
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        entries.append((added["id"], added["content"], int(kind)))
    for i, text, kind in entries:
        if not 0 <= i < n:
            raise XtcError(f"GGUF export: token {text!r} has id {i}, beyond the model's {n} embedding rows")
        tokens[i], types[i] = text, kind
    return tokens, types, pre


def _tokenizer(writer, weights: Weights) -> None:
    tokens, types, pre = _vocabulary(weights)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(weights.tokenizer_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise XtcError(f"GGUF export: {weights.tokenizer_dir / 'tokenizer.json'} has no BPE merges")
    for kind, key in (("bos", "bos_token_id"), ("eos", "eos_token_id")):  # the config's ids where the tokenizer has none
        if kind not in special.special_token_ids and isinstance(weights.config.get(key), int):
            special.special_token_ids[kind] = weights.config[key]
    # As the Hugging Face tokenizer does with add_special_tokens=True (False unless its template adds them).
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


# -- tensors ----------------------------------------------------------------------------------------------
def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of q_proj / k_proj (or their bias) from Hugging Face's rotary layout (each head's first
    half, then second half) to llama.cpp's (the two halves interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_names(weights: Weights) -> dict[str, tuple[str, object]]:
    """GGUF name -> (Hugging Face name, transform) for every tensor the file holds."""
    T, N = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    layout, c = weights.layout, weights.config
    out: dict[str, tuple[str, object]] = {}

    def put(kind, hf: str, bid: int | None = None, suffixes=("weight",), transform=None) -> None:
        for suffix in suffixes:
            name = f"{hf}.{suffix}"
            if name in weights.tensors:
                key = N[kind].format(bid=bid) if bid is not None else N[kind]
                out[f"{key}.{suffix}"] = (name, transform)
            elif suffix == "weight":
                raise XtcError(f"{weights.name}: tensor {name} is missing")

    both = ("weight", "bias")
    put(T.TOKEN_EMBD, layout.embeddings[0])
    put(T.OUTPUT_NORM, layout.final_norm, suffixes=both)
    # (GGUF kind, module in a layer (xtc.core.format's table), weight transform, bias transform)
    per_layer = [(T.ATTN_NORM, layout.norms[0], None, None), (T.FFN_NORM, layout.norms[1], None, None)]
    if layout.name == "llama":
        heads = c["num_attention_heads"]
        kv = c.get("num_key_value_heads") or heads
        q, k, v = layout.attention_in
        gate, up = layout.mlp_in
        q_rows, k_rows = (lambda w: _permute(w, heads)), (lambda w: _permute(w, kv))
        per_layer += [(T.ATTN_Q, q, q_rows, q_rows), (T.ATTN_K, k, k_rows, k_rows), (T.ATTN_V, v, None, None),
                      (T.ATTN_OUT, layout.attention_out, None, None), (T.FFN_GATE, gate, None, None),
                      (T.FFN_UP, up, None, None), (T.FFN_DOWN, layout.mlp_out, None, None)]
        if not weights.tied:
            put(T.OUTPUT, layout.head)
    else:
        put(T.POS_EMBD, layout.embeddings[1])
        t = np.transpose  # Conv1D stores (in, out); GGUF wants (out, in) as numpy sees it
        per_layer += [(T.ATTN_QKV, layout.attention_in[0], t, None), (T.ATTN_OUT, layout.attention_out, t, None),
                      (T.FFN_UP, layout.mlp_in[0], t, None), (T.FFN_DOWN, layout.mlp_out, t, None)]
        head = layout.head if not weights.tied else layout.embeddings[0]
        out[f"{N[T.OUTPUT]}.weight"] = (f"{head}.weight", None)  # as llama.cpp's converter writes GPT-2
    for i in range(c[layout.num_layers_key]):
        for kind, module, weight_transform, bias_transform in per_layer:
            put(kind, f"{layout.layer(i)}.{module}", i, ("weight",), weight_transform)
            put(kind, f"{layout.layer(i)}.{module}", i, ("bias",), bias_transform)
    return out


def write_gguf(weights: Weights, out: Path, dtype: str = "f16", description: str = "") -> Path:
    """Write the GGUF file `out`."""
    logging.getLogger("gguf").setLevel(logging.WARNING)
    np_dtype = DTYPES[dtype]
    writer = gguf.GGUFWriter(str(out), weights.layout.name)
    writer.add_name(weights.name)
    if description:
        writer.add_description(description)
    _hyperparameters(writer, weights)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    _tokenizer(writer, weights)
    for name, (hf, transform) in tensor_names(weights).items():
        value = np.asarray(weights.tensors[hf], np.float32)
        if transform is not None:
            value = transform(value)
        value = np.ascontiguousarray(value.astype(np_dtype if value.ndim >= 2 else np.float32))
        if not np.isfinite(value).all():
            raise XtcError(f"{hf} does not fit in {dtype}: export with --dtype f32")
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
