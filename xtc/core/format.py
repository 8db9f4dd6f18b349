"""The packed model directory, as the writer (`xtc.train.pack`) and the reader (`xtc.infer.spec`)
both see it, and the one table of where each architecture keeps its weights.

A packed directory holds `config.json` (the architecture's config plus an `xtc` section: format
version, method, kept layers, how every quantised tensor is stored, teacher...), `model.safetensors`
and the tokenizer files.

Format v2 (written now). Every quantised module `M` (a linear layer inside the decoder blocks, the
embedding table) stores unsigned integer codes `q` in `[0, levels)` and, per output row and group
of `group` inputs, an fp16 `scale` and `min`: the weight is `scale * q + min`. In the weights file:
`M.weight.packed` (codes of `bits` bits, `8 // bits` per byte, the first in the lowest bits; 3-bit
codes as their low two bits there and their high bit in `M.weight.packed_hi`), `M.weight.scale`
and `M.weight.min` (fp16, (rows, groups)). The `xtc` section lists them:
`"quant": {"M": {"levels": L, "group": G or null}}` (null: one group per row), and `"act_bits"`
(8: activations entering the block linears are quantised per token to int8; null: fp32). Binary
weights (XTC's 1 bit) are 2 levels, ternary 3, the int2/int3/int4 grids 4/8/16. Every other tensor
(norms, biases) is stored once in fp32 under its Hugging Face name. A 1-bit weight costs one bit.

Format v1 (still read): binary/ternary/symmetric codes with a `scale` only, described by
`weight_bits`, `group_size`, `embed_bits`; `read_quant` maps it onto the v2 description.

Nothing here imports torch. `model_tensors` and `model_config` take a torch model, but only call
its methods: modules with a packed form (XTC's quantised layers) provide `packed_tensors()` and
`packed_settings()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xtc.core.errors import XtcError

FORMAT_VERSION = 2
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")  # what counts as a model's size on disk
PACKED = "weight.packed"
PACKED_HI = "weight.packed_hi"  # the high bit of 3-bit codes
SCALE = "weight.scale"
MIN = "weight.min"


def packed_name(module: str) -> str:
    """The tensor holding a quantised module's bit-packed codes."""
    return f"{module}.{PACKED}"


def scale_name(module: str) -> str:
    """The tensor holding a quantised module's fp16 scales."""
    return f"{module}.{SCALE}"


# -- architectures: the one table of Hugging Face module names ----------------------------------
@dataclass(frozen=True)
class Layout:
    """Where a Hugging Face architecture keeps its weights. Names are module paths (a tensor is
    the module's name + `.weight` / `.bias`); the per-layer names are relative to `{layers}.{i}`."""

    name: str  # the config's model_type
    layers: str  # the decoder layers' ModuleList
    num_layers_key: str  # config key holding the layer count
    embeddings: tuple[str, ...]  # token embedding first, then learned positions if any
    final_norm: str
    head: str  # the output projection; absent from the weights when tied to the token embedding
    norms: tuple[str, str]  # before attention, before the MLP
    attention_in: tuple[str, ...]  # q, k, v projections (GPT-2: the fused c_attn), fused in this order
    attention_out: str
    mlp_in: tuple[str, ...]  # gate and up projections (GPT-2: c_fc), fused in this order
    mlp_out: str
    transposed: bool  # linear weights stored (in, out): GPT-2's Conv1D
    rms_norm: bool  # RMSNorm without bias (else LayerNorm with bias)
    rotary: str | None  # the rotary-embedding module (positions by RoPE); None: learned positions

    def layer(self, i: int) -> str:
        return f"{self.layers}.{i}"


LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout("gpt2", "transformer.h", "n_layer", ("transformer.wte", "transformer.wpe"), "transformer.ln_f",
                   "lm_head", ("ln_1", "ln_2"), ("attn.c_attn",), "attn.c_proj", ("mlp.c_fc",), "mlp.c_proj",
                   transposed=True, rms_norm=False, rotary=None),
    "llama": Layout("llama", "model.layers", "num_hidden_layers", ("model.embed_tokens",), "model.norm",
                    "lm_head", ("input_layernorm", "post_attention_layernorm"),
                    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj",
                    ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj",
                    transposed=False, rms_norm=True, rotary="model.rotary_emb"),
}
SUPPORTED = tuple(LAYOUTS)
HEAD_TABLE = "table"  # an untied quantised head stores its table as `{head}.table`


def layout_of(model_type) -> Layout:
    """The layout of a config's `model_type`; refuses architectures we cannot compress or run."""
    if model_type not in LAYOUTS:
        raise XtcError(
            f"unsupported architecture {model_type!r}: supported are {', '.join(SUPPORTED)} "
            "(GPT-2 family such as CodeGPT, Llama family such as SmolLM2)"
        )
    return LAYOUTS[model_type]


# -- config.json and its `xtc` section -----------------------------------------------------------
def read_config(directory: Path) -> dict:
    """A model directory's config.json; XtcError if it cannot be read."""
    try:
        config = json.loads((Path(directory) / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: unreadable {CONFIG} ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise XtcError(f"{directory}: unreadable {CONFIG} (not a JSON object)")
    return config


def is_packed(config: dict) -> bool:
    return "xtc" in config


def xtc_section(config: dict, where: object = "model") -> dict:
    """The validated `xtc` section of a packed model's config; XtcError for a format version this
    xtc does not know (newer, or not a version at all)."""
    section = config.get("xtc")
    if not isinstance(section, dict):
        raise XtcError(f"{where}: the `xtc` section of {CONFIG} is not an object")
    version = section.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise XtcError(f"{where}: unknown packed format version {version!r} (this xtc reads v1..v{FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise XtcError(f"{where}: packed format v{version} is newer than this xtc (v{FORMAT_VERSION}); update xtc")
    quant = section.get("quant")
    if quant is not None and not isinstance(quant, dict):
        raise XtcError(f"{where}: `xtc.quant` of {CONFIG} is not an object")
    for name, obj in (quant or {}).items():  # read_quant turns each into a Quantizer
        try:
            Quantizer.from_json(obj)
        except (TypeError, ValueError, KeyError, AttributeError):
            raise XtcError(f"{where}: `xtc.quant` entry {name!r} of {CONFIG} is not {{\"levels\": 2..256, "
                           f"\"group\": a positive number or null}}: {obj!r}") from None
    act_bits = section.get("act_bits")
    if act_bits is not None and (not isinstance(act_bits, int) or isinstance(act_bits, bool) or not 2 <= act_bits <= 8):
        raise XtcError(f"{where}: `xtc.act_bits` of {CONFIG} is {act_bits!r}, not 2..8 or null")
    return section


# -- v1 signed codes (read by `v1_affine`; written by the tests of v1 compatibility) ----------------
def pack_ints(codes: np.ndarray, bits: int) -> np.ndarray:
    """Format v1's storage of signed integer codes along the last dim: 1 bit: -1 -> 0, +1 -> 1;
    wider: code + 2**(bits-1) as an unsigned field, 8 // bits per byte, the first code in the
    lowest bits; 8 bits: the codes as int8."""
    codes = np.asarray(codes)
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.int8)
    unsigned = codes > 0 if bits == 1 else codes.astype(np.int16) + 2 ** (bits - 1)
    return _pack_fields(unsigned, bits)


def unpack_ints(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of `pack_ints`: int8 codes with `length` entries in the last dim."""
    packed = np.asarray(packed)
    if bits == 8:
        return packed.astype(np.int8)
    unsigned = _unpack_fields(packed, bits, length).astype(np.int8)
    return unsigned * 2 - 1 if bits == 1 else unsigned - 2 ** (bits - 1)


# -- affine codes (format v2) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Quantizer:
    """How one tensor is stored: `levels` codes per weight (2 binary, 3 ternary, 4/8/16 for the
    2/3/4-bit grids, 256 for 8 bits), one scale and min per `group` inputs (None: per row)."""

    levels: int
    group: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.levels <= 256:
            raise ValueError(f"levels must be in 2..256, not {self.levels}")
        if self.group is not None and self.group < 1:
            raise ValueError(f"group must be positive or None, not {self.group}")

    @property
    def bits(self) -> int:
        """Storage bits per code."""
        for bits in (1, 2, 3, 4, 8):
            if self.levels <= 2 ** bits:
                return bits
        raise AssertionError("unreachable")

    def groups(self, cols: int) -> int:
        return cols // (self.group or cols)

    def bits_per_weight(self, cols: int) -> float:
        """Bits on disk per weight, scales and mins included."""
        return self.bits + 32 * self.groups(cols) / cols

    def to_json(self) -> dict:
        return {"levels": self.levels, "group": self.group}

    @classmethod
    def from_json(cls, obj: dict) -> "Quantizer":
        return cls(int(obj["levels"]), None if obj.get("group") is None else int(obj["group"]))


def _pack_fields(q: np.ndarray, bits: int) -> np.ndarray:
    per_byte = 8 // bits
    q = q.astype(np.uint8) & np.uint8((1 << bits) - 1)
    pad = (-q.shape[-1]) % per_byte
    if pad:
        q = np.concatenate([q, np.zeros((*q.shape[:-1], pad), np.uint8)], axis=-1)
    fields = q.reshape(*q.shape[:-1], -1, per_byte)
    packed = np.zeros(fields.shape[:-1], dtype=np.uint8)
    for j in range(per_byte):
        packed |= fields[..., j] << np.uint8(bits * j)
    return packed


def _unpack_fields(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    per_byte = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    fields = np.stack([(packed >> np.uint8(bits * j)) & mask for j in range(per_byte)], axis=-1)
    return np.ascontiguousarray(fields.reshape(*packed.shape[:-1], -1)[..., :length])


def pack_codes(q: np.ndarray, bits: int) -> dict[str, np.ndarray]:
    """Unsigned codes (rows, cols) as the weights file stores them: {PACKED[, PACKED_HI]}."""
    q = np.asarray(q, dtype=np.uint8)
    if bits == 8:
        return {PACKED: np.ascontiguousarray(q)}
    if bits == 3:
        return {PACKED: _pack_fields(q & 3, 2), PACKED_HI: _pack_fields(q >> 2, 1)}
    return {PACKED: _pack_fields(q, bits)}


def unpack_codes(tensors: dict[str, np.ndarray], bits: int, cols: int) -> np.ndarray:
    """Inverse of `pack_codes`: uint8 codes (rows, cols)."""
    if bits == 8:
        return np.ascontiguousarray(tensors[PACKED], dtype=np.uint8)
    if bits == 3:
        return _unpack_fields(tensors[PACKED], 2, cols) | (_unpack_fields(tensors[PACKED_HI], 1, cols) << np.uint8(2))
    return _unpack_fields(tensors[PACKED], bits, cols)


def dequantize_affine(q: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """fp32 weights `scale * q + min` from codes (rows, cols) and (rows, groups) scales/mins."""
    rows, cols = q.shape
    groups = scale.shape[-1]
    s = np.asarray(scale, np.float32)[..., None]
    m = np.asarray(minimum, np.float32)[..., None]
    return (q.reshape(rows, groups, cols // groups).astype(np.float32) * s + m).reshape(rows, cols)


def read_quant(section: dict, tensor_names) -> dict[str, Quantizer]:
    """Module name -> Quantizer for every quantised module of a packed model (v2: the section's
    `quant`; v1: derived from `weight_bits` / `group_size` / `embed_bits` and the tensor names)."""
    if section.get("version", 1) >= 2:
        return {name: Quantizer.from_json(obj) for name, obj in (section.get("quant") or {}).items()}
    out: dict[str, Quantizer] = {}
    suffix = f".{PACKED}"
    for key in tensor_names:
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            is_table = not any(part in module for part in (".layers.", ".h."))
            if is_table:
                bits = section.get("embed_bits") or 8
                out[module] = Quantizer(2 ** bits, None if bits >= 8 else 64)
            else:
                bits = section.get("weight_bits") or 1
                out[module] = Quantizer({1: 2, 2: 3}[bits], section.get("group_size"))
    return out


def v1_affine(packed: np.ndarray, scale: np.ndarray, bits: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A v1 module's (codes, scale, min) in the v2 form: unsigned codes with scale * q + min."""
    scale = np.asarray(scale, np.float32)
    if bits == 8:  # signed int8 codes
        return (packed.astype(np.int16) + 128).astype(np.uint8), scale, -128 * scale
    q = _unpack_fields(packed, bits, cols)
    if bits == 1:  # -1 -> 0, +1 -> 1: alpha * (2q - 1)
        return q, 2 * scale, -scale
    return q, scale, -(2 ** (bits - 1)) * scale  # code + 2**(bits-1)


# -- a model in its stored form -------------------------------------------------------------------
def model_tensors(model) -> dict[str, np.ndarray]:
    """A torch model's weights as a packed directory stores them, as numpy arrays under their
    state-dict names: quantised modules' codes and scales (`packed_tensors()`), every other tensor
    once in fp32 (a weight tied to another, e.g. a tied head, is not repeated)."""
    tensors: dict[str, np.ndarray] = {}
    handled: set[str] = set()
    for name, module in model.named_modules():
        packed = getattr(module, "packed_tensors", None)
        if callable(packed):
            for key, value in packed().items():
                tensors[f"{name}.{key}"] = np.ascontiguousarray(value)
            handled.update(f"{name}.{p}" for p in getattr(module, "packed_params", ("weight",)))
    stored: set[int] = set()
    for name, tensor in model.state_dict().items():
        if name in handled or name in tensors or tensor.data_ptr() in stored:
            continue
        stored.add(tensor.data_ptr())
        tensors[name] = np.ascontiguousarray(tensor.detach().float().cpu().numpy())
    return tensors


def model_quant(model) -> dict:
    """The `quant` and `act_bits` entries of the `xtc` section: every module with a packed form
    names its `quantizer` (a `Quantizer`) and, for linears, its `act_bits`."""
    quant, act_bits = {}, None
    for name, module in model.named_modules():
        q = getattr(module, "quantizer", None)
        if isinstance(q, Quantizer) and callable(getattr(module, "packed_tensors", None)):
            quant[name] = q.to_json()
            act_bits = act_bits or getattr(module, "act_bits", None)
    return {"quant": quant, "act_bits": act_bits}


def model_config(model, meta: dict | None = None) -> dict:
    """The config.json of a packed directory for this model: its architecture config with the
    `xtc` section (format version, `meta`, how each quantised tensor is stored)."""
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("xtc", None)
    config["xtc"] = {"version": FORMAT_VERSION, **(meta or {}), **model_quant(model)}
    config["architectures"] = [model.__class__.__name__]
    return config


# -- sizes ----------------------------------------------------------------------------------------
def weight_files_mb(path: Path) -> float:
    """Megabytes of weight files of a model directory, or of one model file (what `xtc list`,
    `xtc bench` and the size tables report)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) / 1e6
