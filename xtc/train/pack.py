"""The packed model directory: weights at their real bit width on disk.

`config.json` is the architecture's config plus an `xtc` section; `model.safetensors` holds, per
quantised linear layer, its codes bit-packed (8 binary weights per byte, 4 ternary) with fp16
scales, the embeddings as 8-bit (or 4-bit, two per byte) integers with fp16 scales, and everything
else (norms, biases) in fp32. Loading rebuilds the fake-quantised student exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from xtc.train import arch as archs
from xtc.core.errors import XtcError
from xtc.train.quant import (QuantEmbedding, QuantHead, QuantLinear, dequantize, quantize_model,
                       quantize_weight, symmetric_int)

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def pack_ints(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed integer codes along the last dim into uint8, 8 // bits codes per byte.

    1 bit: -1 -> 0, +1 -> 1. Wider: code + 2**(bits-1) as an unsigned field. The last dim is padded
    to whole bytes.
    """
    if bits == 8:
        return codes.to(torch.int8).contiguous()
    per_byte = 8 // bits
    unsigned = (codes > 0).to(torch.uint8) if bits == 1 else (codes.to(torch.int16) + 2 ** (bits - 1)).to(torch.uint8)
    pad = (-unsigned.shape[-1]) % per_byte
    if pad:
        unsigned = torch.nn.functional.pad(unsigned, (0, pad))
    fields = unsigned.reshape(*unsigned.shape[:-1], -1, per_byte)
    packed = torch.zeros(fields.shape[:-1], dtype=torch.uint8)
    for j in range(per_byte):
        packed |= fields[..., j] << (bits * j)
    return packed


def unpack_ints(packed: torch.Tensor, bits: int, length: int) -> torch.Tensor:
    """Inverse of `pack_ints`: int8 codes with `length` entries in the last dim."""
    if bits == 8:
        return packed.to(torch.int8)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    fields = torch.stack([(packed >> (bits * j)) & mask for j in range(per_byte)], dim=-1)
    unsigned = fields.reshape(*packed.shape[:-1], -1)[..., :length].to(torch.int16)
    codes = unsigned * 2 - 1 if bits == 1 else unsigned - 2 ** (bits - 1)
    return codes.to(torch.int8)


def packed_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything the model needs, at its storage precision, under stable names."""
    tensors: dict[str, torch.Tensor] = {}
    handled: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            codes, scale = quantize_weight(module.weight.detach().float(), module.weight_bits, module.group_size)
            tensors[f"{name}.weight.packed"] = pack_ints(codes, module.weight_bits)
            tensors[f"{name}.weight.scale"] = scale.to(torch.float16)
            handled.add(f"{name}.weight")
        elif isinstance(module, QuantEmbedding):
            codes, scale = symmetric_int(module.weight.detach().float(), module.bits, module.group_size)
            tensors[f"{name}.weight.packed"] = pack_ints(codes, module.bits)
            tensors[f"{name}.weight.scale"] = scale.to(torch.float16)
            handled.add(f"{name}.weight")
    stored: set[int] = set()
    for name, tensor in model.state_dict().items():
        if name in handled or name in tensors or tensor.data_ptr() in stored:
            continue  # tied weights (a plain head sharing the embedding) are stored once
        stored.add(tensor.data_ptr())
        tensors[name] = tensor.detach().float().contiguous()
    return tensors


def save_packed(model: nn.Module, tokenizer, out_dir: Path, meta: dict) -> Path:
    """Write the packed directory. `meta` becomes the config's `xtc` section (method, layers...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["xtc"] = {"version": FORMAT_VERSION, **meta, **quant_settings(model)}
    config["architectures"] = [model.__class__.__name__]
    save_file(packed_tensors(model), out_dir / WEIGHTS, metadata={"format": "pt", "xtc_format": str(FORMAT_VERSION)})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)
    return out_dir


def quant_settings(model: nn.Module) -> dict:
    linear = next((m for m in model.modules() if isinstance(m, QuantLinear)), None)
    embed = next((m for m in model.modules() if isinstance(m, QuantEmbedding)), None)
    return {
        "weight_bits": linear.weight_bits if linear else None,
        "act_bits": linear.act_bits if linear else None,
        "group_size": linear.group_size if linear else None,
        "embed_bits": embed.bits if embed else None,
    }


def load_packed(directory: Path) -> tuple[nn.Module, object]:
    """Rebuild the (fake-quantised) student from a packed directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: bad config.json ({exc})") from None
    archs.arch_of(config)
    settings = config.xtc
    if settings.get("version", 0) > FORMAT_VERSION:
        raise XtcError(f"{directory}: packed format v{settings['version']} is newer than this xtc (v{FORMAT_VERSION})")
    try:
        tensors = load_file(directory / WEIGHTS)
    except (OSError, SafetensorError) as exc:
        raise XtcError(f"{directory}: corrupt or missing {WEIGHTS} ({str(exc)[:120]})") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if settings.get("weight_bits"):
        quantize_model(model, settings["weight_bits"], settings.get("act_bits"), settings.get("group_size"),
                       settings.get("embed_bits") or 8)
    state = _unpacked_state(model, tensors, directory)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    _materialise_buffers(model, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: cannot load the tokenizer ({exc})") from None
    return model.eval(), tokenizer


def _unpacked_state(model: nn.Module, tensors: dict[str, torch.Tensor], directory: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    try:
        for name, module in model.named_modules():
            if isinstance(module, (QuantLinear, QuantEmbedding)):
                bits = module.weight_bits if isinstance(module, QuantLinear) else module.bits
                rows, cols = module.weight.shape
                codes = unpack_ints(tensors.pop(f"{name}.weight.packed"), bits, cols)
                state[f"{name}.weight"] = dequantize(codes, tensors.pop(f"{name}.weight.scale").float())
        tied = _tied_names(model)
        for name in model.state_dict():
            if name not in state and name not in tied:
                state[name] = tensors.pop(name)
    except KeyError as exc:
        raise XtcError(f"{directory}: {WEIGHTS} lacks tensor {exc}; is it from another model?") from None
    return state


def _tied_names(model: nn.Module) -> set[str]:
    """Parameter names that the model ties to another (restored by `tie_weights`)."""
    head = model.get_output_embeddings()
    if not (isinstance(head, nn.Linear) and getattr(model.config, "tie_word_embeddings", False)):
        return set()
    return {f"{name}.weight" for name, module in model.named_modules() if module is head}


def _materialise_buffers(model: nn.Module, config) -> None:
    """Non-persistent buffers (e.g. rotary frequencies) were created on the meta device."""
    for module in model.modules():
        if hasattr(module, "rope_init_fn") or module.__class__.__name__.endswith("RotaryEmbedding"):
            fresh = module.__class__(config=config)
            for key, value in fresh.named_buffers(recurse=False):
                setattr(module, key, value)
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            raise XtcError(f"internal: buffer {name} was not restored")


def weight_files_mb(directory: Path) -> float:
    """Megabytes of weight files (what `list` and the size tables report)."""
    total = sum(p.stat().st_size for p in Path(directory).iterdir()
                if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    return total / 1e6
