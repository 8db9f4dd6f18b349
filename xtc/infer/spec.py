"""From stored tensors to the runtime's `Spec`: one builder, two sources of tensors.

`build_spec(config, tensors)` reads a model in the packed format (`xtc.core.format`): a config with
an optional `xtc` section, and tensors by name, bit-packed where quantised. Module names come from
`xtc.core.format.LAYOUTS`. The tensors come from
- a directory (`spec_from_directory`): a packed or a plain Hugging Face directory's safetensors
  file(s), read as numpy arrays without torch, still bit-packed;
- a transformers model in memory (`spec_from_model`), plain or fake-quantised: its weights as a
  packed directory would store them (`xtc.core.format.model_tensors`), so a student runs the same
  from memory as from disk.

What the builder cannot run raises `Unsupported` (the runtime may then take another route);
broken files raise XtcError.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.core.tensors import Tensors
from xtc.infer.layers import Block, DenseLinear, Norm, Spec, Table, as_f32, fuse, quantized_linear

RopeTables = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (length, head dim) -> cos, sin


class Unsupported(Exception):
    """The builder cannot run this model (an architecture variant, a dtype numpy cannot hold...)."""


@dataclass
class Sizes:
    width: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    inner: int  # MLP width
    eps: float
    positions: int


def _whole(config: dict, key: str, default: int | None = None) -> int:
    """A size from the config: a positive whole number (a string or a zero here would surface as a
    TypeError, or as a wrong-sized buffer the kernels read past)."""
    value = config.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Unsupported(f"config.json: {key} is {value!r}, not a positive whole number")
    return value


def _eps(config: dict, key: str, default: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise Unsupported(f"config.json: {key} is {value!r}, not a small non-negative number")
    return float(value)


def _sizes(layout: format.Layout, config: dict, max_context: int) -> Sizes:
    if layout.name == "llama":
        d, n_heads = _whole(config, "hidden_size"), _whole(config, "num_attention_heads")
        return Sizes(d, n_heads, _whole(config, "num_key_value_heads", n_heads),
                     _whole(config, "head_dim", max(1, d // n_heads)), _whole(config, "intermediate_size"),
                     _eps(config, "rms_norm_eps", 1e-6), _whole(config, "max_position_embeddings", max_context))
    if config.get("scale_attn_by_inverse_layer_idx") or config.get("add_cross_attention"):
        raise Unsupported("GPT-2 variant")
    d, n_heads = _whole(config, "n_embd"), _whole(config, "n_head")
    return Sizes(d, n_heads, n_heads, max(1, d // n_heads), _whole(config, "n_inner", 4 * d),
                 _eps(config, "layer_norm_epsilon", 1e-5),
                 _whole(config, "n_positions") if config.get("n_positions") is not None
                 else _whole(config, "max_position_embeddings", max_context))


def _activation_name(config: dict) -> str:
    return config.get("hidden_act") or config.get("activation_function") or "gelu_new"


def _attn_scale(config: dict, head_dim: int) -> float:
    if config.get("model_type") == "gpt2" and not config.get("scale_attn_weights", True):
        return 1.0
    return 1.0 / math.sqrt(head_dim)


def rope_theta(config: dict) -> float:
    """The base frequency of a Hugging Face config's rotary embedding (read by the runtime and the
    GGUF export); Unsupported for any rotary type but the default one."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = params.get("rope_type") or params.get("type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default" or config.get("partial_rotary_factor", 1.0) != 1.0:
        raise Unsupported(f"rope type {kind}")
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def rope_tables(config: dict, length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (length, head dim) of the default rotary embedding, as transformers computes them."""
    theta = rope_theta(config)
    # As transformers computes it: inv_freq in fp32, positions x inv_freq in fp32.
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))).astype(np.float32)
    freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return as_f32(np.cos(emb)), as_f32(np.sin(emb))


def build_spec(config: dict, tensors, max_context: int, rope: RopeTables | None = None) -> Spec:
    """The runtime's Spec from a config and a name -> numpy array mapping (anything with `in`,
    `[]` and `keys()`). `rope`: cos/sin tables for RoPE models (default: computed from the config)."""
    layout = format.layout_of(config.get("model_type"))
    section = config.get("xtc") or {}
    quant = format.read_quant(section, tensors.keys())  # module -> Quantizer, for v1 and v2 alike
    v1, act_bits = section.get("version", 1) < 2, section.get("act_bits")
    s = _sizes(layout, config, max_context)
    d = s.width

    def tensor(name: str) -> np.ndarray:
        if name not in tensors:
            raise Unsupported(f"missing tensor {name}")
        return tensors[name]

    def affine(name: str, q: format.Quantizer, rows: int | None, cols: int) -> tuple[np.ndarray, ...]:
        """A quantised module's codes (rows, cols), scales and mins (rows, groups), any version."""
        packed = tensor(format.packed_name(name))
        width = cols if q.bits == 8 else -(-cols * (2 if q.bits == 3 else q.bits) // 8)
        if packed.ndim != 2 or packed.shape[1] != width or (rows is not None and packed.shape[0] != rows):
            raise Unsupported(f"{name}: packed shape {packed.shape}, expected ({rows or 'rows'}, {width})")
        if v1:
            codes, scale, mins = format.v1_affine(packed, tensor(format.scale_name(name)), q.bits, cols)
        else:
            parts = {format.PACKED: packed}
            if q.bits == 3:
                parts[format.PACKED_HI] = tensor(f"{name}.{format.PACKED_HI}")
            codes = format.unpack_codes(parts, q.bits, cols)
            scale, mins = tensor(format.scale_name(name)), tensor(f"{name}.{format.MIN}")
        if scale.shape != (packed.shape[0], q.groups(cols)) or np.shape(mins) != scale.shape:
            raise Unsupported(f"{name}: scale shape {scale.shape} for {q}")
        return codes, scale, mins

    def vector(name: str, length: int) -> np.ndarray:
        """A norm's or a bias's vector: the kernels read `length` floats from it unchecked."""
        v = tensor(name)
        if v.shape != (length,):
            raise Unsupported(f"{name}: shape {v.shape}, expected ({length},)")
        return v

    def linear(name: str, rows: int, cols: int):
        bias = vector(f"{name}.bias", rows).astype(np.float32) if f"{name}.bias" in tensors else None
        if name in quant:
            q = quant[name]
            codes, scale, mins = affine(name, q, rows, cols)
            return quantized_linear(codes, q.bits, scale, mins, bias, act_bits)
        w = tensor(f"{name}.weight")
        if layout.transposed:  # GPT-2's Conv1D stores (in, out)
            w = w.T
        if w.shape != (rows, cols):
            raise Unsupported(f"{name}: shape {w.shape}")
        return DenseLinear(w, bias)

    def table(name: str, rows: int | None) -> Table:
        if name in quant:
            q = quant[name]
            codes, scale, mins = affine(name, q, rows, d)
            return Table.quantized(codes, q.bits, scale, mins)
        w = tensor(f"{name}.weight")
        if w.ndim != 2 or w.shape[1] != d or (rows is not None and w.shape[0] != rows):
            raise Unsupported(f"{name}: shape {w.shape}")
        return Table(w)

    def norm(name: str) -> Norm:
        bias = None if layout.rms_norm else vector(f"{name}.bias", d)
        return Norm(as_f32(vector(f"{name}.weight", d)), None if bias is None else as_f32(bias), float(s.eps),
                    layout.rms_norm)

    H, KV, hd, f = s.n_heads, s.n_kv_heads, s.head_dim, s.inner
    qkv_rows = [(H + 2 * KV) * hd] if len(layout.attention_in) == 1 else [H * hd, KV * hd, KV * hd]
    blocks = []
    for i in range(_whole(config, layout.num_layers_key)):
        p = layout.layer(i)
        blocks.append(Block(
            norm(f"{p}.{layout.norms[0]}"), norm(f"{p}.{layout.norms[1]}"),
            fuse([linear(f"{p}.{n}", rows, d) for n, rows in zip(layout.attention_in, qkv_rows)]),
            linear(f"{p}.{layout.attention_out}", d, H * hd),
            fuse([linear(f"{p}.{n}", f, d) for n in layout.mlp_in]),
            linear(f"{p}.{layout.mlp_out}", d, f)))
    vocab = _whole(config, "vocab_size") if "vocab_size" in config else None  # token ids index the table unchecked
    embed = table(layout.embeddings[0], vocab)
    pos_embed, rope_cs = None, None
    if layout.rotary is not None:
        length = min(max_context, s.positions)
        rope_cs = rope(length, hd) if rope is not None else rope_tables(config, length, hd)
    else:
        pos_embed = table(layout.embeddings[1], None)
        if pos_embed.rows < s.positions:  # looked up by position, up to s.positions
            raise Unsupported(f"{layout.embeddings[1]}: {pos_embed.rows} positions, the config says {s.positions}")
    head = embed
    untied_table = f"{layout.head}.{format.HEAD_TABLE}"
    if untied_table in quant:
        head = table(untied_table, embed.rows)
    elif f"{layout.head}.weight" in tensors:
        head = table(layout.head, embed.rows)
    elif not config.get("tie_word_embeddings", True):
        raise Unsupported("untied head without weights")
    return Spec(arch=layout.name, n_heads=H, n_kv_heads=KV, head_dim=hd, activation=_activation_name(config),
                positions=s.positions, embed=embed, head=head, final_norm=norm(layout.final_norm), blocks=blocks,
                pos_embed=pos_embed, rope=rope_cs, attn_scale=_attn_scale(config, hd))


# -- tensors from a directory, without torch ------------------------------------------------------
class DirectoryTensors(Tensors):
    """A directory's tensors (`xtc.core.tensors`); what the builder cannot use raises Unsupported.
    bf16 is not widened: such a directory takes the transformers route (`load_runtime`)."""

    def __init__(self, directory: Path):
        super().__init__(directory, widen_bf16=False)
        if not self.files:
            raise Unsupported("no safetensors weights")

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return super().__getitem__(key)
        except Exception as exc:  # bf16 and other dtypes numpy cannot hold
            raise Unsupported(f"{key}: {exc}") from None


def spec_from_directory(directory: Path, max_context: int, config: dict | None = None) -> Spec:
    """A packed (`xtc` in config.json) or plain Hugging Face directory, read with numpy only."""
    config = format.read_config(directory) if config is None else config
    if format.is_packed(config):
        format.xtc_section(config, directory)
    return build_spec(config, DirectoryTensors(directory), max_context)


# -- tensors from a transformers model in memory ---------------------------------------------------
def spec_from_model(model, max_context: int) -> Spec:
    """A transformers model (plain or fake-quantised), read once; torch is loaded already for it."""
    config = format.model_config(model)
    layout = format.layout_of(config.get("model_type"))
    rope = None
    if layout.rotary is not None:
        rotary = model.get_submodule(layout.rotary)

        def rope(length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
            import torch

            with torch.no_grad():
                cos, sin = rotary(torch.zeros(1, dtype=torch.float32), torch.arange(length)[None])
            return as_f32(cos[0].numpy()), as_f32(sin[0].numpy())

    try:
        return build_spec(config, format.model_tensors(model), max_context, rope)
    except Unsupported as exc:
        raise XtcError(f"the runtime cannot run this model ({exc})") from None
