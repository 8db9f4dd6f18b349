"""Any SRC as plain weights: the architecture's config (no `xtc` section) and every tensor under
its Hugging Face name, in the Hugging Face layout, as numpy arrays. Both exporters start here.

- A packed student (`xtc.core.format`): every quantised module's codes are dequantised with the
  format's own helpers (`scale * q + min`, fp16 scales and mins, format v1 mapped by
  `v1_affine`): the weights are exactly those the student computes with. Read with numpy only.
- A Hugging Face directory with safetensors weights: read with numpy only (bf16 included).
- Anything else (a .gguf file, a hub id, a directory with only `pytorch_model.bin`) goes through
  transformers (`xtc.core.sources.load_with_transformers`, imports torch).

Activation quantisation (`act_bits`: the xtc runtime quantises the activations entering the block
linears to int8 per token) is a run-time rule of the xtc engine, not a weight: an export carries
the student's weights only, and other engines run activations in their own precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.core.sources import Source, load_with_transformers
from xtc.core.tensors import Tensors

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "tokenizer.model", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}  # transformers' causal-LM class per model_type


@dataclass
class Weights:
    """A model as plain weights."""

    name: str
    kind: str  # the source's kind (xtc.core.sources.KINDS)
    config: dict  # the architecture's config.json, without the `xtc` section
    tensors: dict[str, np.ndarray]  # Hugging Face names and layouts (GPT-2's Conv1D: (in, out)); a tied head absent
    tokenizer_dir: Path  # holds tokenizer.json (and the other tokenizer files found)
    layout: format.Layout
    act_bits: int | None = None  # the student's run-time activation bits in xtc (not carried by an export)
    quantized: dict[str, str] = field(default_factory=dict)  # module -> how it was stored ("2 levels, per row")

    @property
    def tied(self) -> bool:
        return f"{self.layout.head}.weight" not in self.tensors

    def vocab_rows(self) -> int:
        return int(self.tensors[f"{self.layout.embeddings[0]}.weight"].shape[0])


def plain_config(config: dict) -> dict:
    """A packed or loaded model's config as a plain Hugging Face config: no `xtc` section, no
    quantisation config, `architectures` set."""
    config = {k: v for k, v in config.items() if k not in ("xtc", "quantization_config")}
    layout = format.layout_of(config.get("model_type"))
    config["architectures"] = [ARCHITECTURES[layout.name]]
    return config


def _directory_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the directory's safetensors files (bf16 widened to fp32)."""
    tensors = Tensors(directory)
    out = {}
    for key in tensors.keys():
        try:
            out[key] = tensors[key]
        except TypeError as exc:  # a dtype numpy cannot hold (fp8...): the user's file, not a bug
            raise XtcError(f"{directory}: tensor {exc}") from None
    return out


# -- packed students --------------------------------------------------------------------------------
def _input_width(layout: format.Layout, config: dict, module: str) -> int:
    """Columns (inputs) of a quantised module of a packed model, from the config."""
    if layout.name == "llama":
        d, heads = config["hidden_size"], config["num_attention_heads"]
        head_dim, inner = config.get("head_dim") or d // heads, config["intermediate_size"]
    else:
        d = config["n_embd"]
        heads, head_dim, inner = config["n_head"], d // config["n_head"], config.get("n_inner") or 4 * d
    if module.startswith(layout.layers + "."):
        if module.endswith("." + layout.attention_out):
            return heads * head_dim
        if module.endswith("." + layout.mlp_out):
            return inner
    return d  # q/k/v, gate/up, embedding tables, the head's table


def dequantized_packed(directory: Path, config: dict) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A packed directory's tensors with every quantised module dequantised to fp32, under Hugging
    Face names and layouts; and how each quantised module was stored."""
    layout = format.layout_of(config.get("model_type"))
    section = format.xtc_section(config, directory)
    raw = _directory_tensors(directory)
    if not raw:
        raise XtcError(f"{directory}: no {format.WEIGHTS}")
    quant = format.read_quant(section, raw.keys())
    v1 = section.get("version", 1) < 2
    out: dict[str, np.ndarray] = {}
    consumed: set[str] = set()
    described: dict[str, str] = {}
    head_table = f"{layout.head}.{format.HEAD_TABLE}"
    try:
        for module, q in quant.items():
            cols = _input_width(layout, config, module)
            packed = raw[format.packed_name(module)]
            if v1:
                codes, scale, mins = format.v1_affine(packed, raw[format.scale_name(module)], q.bits, cols)
            else:
                parts = {format.PACKED: packed}
                if q.bits == 3:
                    parts[format.PACKED_HI] = raw[f"{module}.{format.PACKED_HI}"]
                codes = format.unpack_codes(parts, q.bits, cols)
                scale, mins = raw[format.scale_name(module)], raw[f"{module}.{format.MIN}"]
            if codes.shape[1] != cols or np.shape(scale) != (codes.shape[0], q.groups(cols)):
                raise XtcError(f"{directory}: {module} has codes {codes.shape} and scales {np.shape(scale)}, "
                               f"not what the config says ({cols} inputs, {q})")
            weight = format.dequantize_affine(codes, scale, mins)
            if layout.transposed and module.startswith(layout.layers + "."):
                weight = np.ascontiguousarray(weight.T)  # back to GPT-2's Conv1D layout (in, out)
            out[f"{layout.head}.weight" if module == head_table else f"{module}.weight"] = weight
            consumed.update(k for k in raw if k.startswith(f"{module}.weight."))
            described[module] = f"{q.levels} levels, " + (f"groups of {q.group}" if q.group else "per row")
    except KeyError as exc:
        raise XtcError(f"{directory}: {format.WEIGHTS} lacks tensor {exc}; is it from another model?") from None
    for name, value in raw.items():
        if name not in consumed and name not in out:
            out[name] = np.asarray(value, np.float32) if np.issubdtype(value.dtype, np.floating) else np.asarray(value)
    return out, described


# -- any source ---------------------------------------------------------------------------------------
def read_weights(source: Source, scratch: Path) -> Weights:
    """The source as plain weights. `scratch`: an empty directory for tokenizer files that need
    writing (sources without a directory of their own); it must outlive the Weights."""
    if source.kind == "packed":
        config = source.config or format.read_config(source.path)
        tensors, described = dequantized_packed(source.path, config)
        section = config.get("xtc") or {}
        weights = Weights(source.name, "packed", plain_config(config), tensors, _tokenizer_dir(source.path, scratch),
                          format.layout_of(config.get("model_type")), section.get("act_bits"), described)
    elif source.kind == "hf" and any(source.path.glob("*.safetensors")):
        config = source.config or format.read_config(source.path)
        tensors = {k: np.asarray(v, np.float32) if np.issubdtype(v.dtype, np.floating) else v
                   for k, v in _directory_tensors(source.path).items()}
        weights = Weights(source.name, "hf", plain_config(config), tensors, _tokenizer_dir(source.path, scratch),
                          format.layout_of(config.get("model_type")))
    else:
        model, tokenizer = load_with_transformers(source)
        tokenizer.save_pretrained(scratch)
        config = model.config.to_dict()
        tensors = format.model_tensors(model)  # fp32 numpy, a tied head once (under the embedding's name)
        weights = Weights(source.name, source.kind, plain_config(config), tensors, scratch,
                          format.layout_of(config.get("model_type")))
    _drop_tied_head(weights)
    return weights


def _tokenizer_dir(directory: Path, scratch: Path) -> Path:
    """The model directory when it holds tokenizer.json; else its tokenizer written there by
    transformers (e.g. GPT-2's vocab.json + merges.txt)."""
    if (directory / "tokenizer.json").is_file():
        return directory
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(directory).save_pretrained(scratch)
    except Exception as exc:  # no or unusable tokenizer files: a user error
        raise XtcError(f"{directory}: no usable tokenizer ({str(exc).strip()[:120] or exc.__class__.__name__})") from None
    for name in TOKENIZER_FILES:  # keep what transformers does not rewrite (generation config, chat template)
        if (directory / name).is_file() and not (scratch / name).exists():
            (scratch / name).write_bytes((directory / name).read_bytes())
    return scratch


def _drop_tied_head(weights: Weights) -> None:
    """A head tied to the token embedding is not stored (transformers and llama.cpp tie it again)."""
    head = f"{weights.layout.head}.weight"
    if head not in weights.tensors:
        if not weights.config.get("tie_word_embeddings", True):
            raise XtcError(f"{weights.name}: the config says the output head is untied, but there are no head weights")
        weights.config["tie_word_embeddings"] = True
        return
    embed = weights.tensors[f"{weights.layout.embeddings[0]}.weight"]
    if weights.config.get("tie_word_embeddings", weights.layout.name == "gpt2") and np.array_equal(
            weights.tensors[head], embed):
        del weights.tensors[head]
    else:
        weights.config["tie_word_embeddings"] = False
