"""The packed model directory: weights at their real bit width on disk (format: `xtc.core.format`).

`save_packed` writes a student as the format stores it: per quantised linear layer its codes
bit-packed (8 binary weights per byte, 4 ternary) with fp16 scales, the embeddings as 8-bit (or
4-bit, two per byte) integers with fp16 scales, everything else (norms, biases) in fp32.
`load_packed` rebuilds the fake-quantised student exactly (the runtime reads the same files
without torch: `xtc.infer.spec`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.numpy import save_file
from safetensors.torch import load_file
from torch import nn

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.train import arch as archs
from xtc.train.quant import QuantEmbedding, QuantLinear, dequantize, quantize_model


def save_packed(model: nn.Module, tokenizer, out_dir: Path, meta: dict) -> Path:
    """Write the packed directory. `meta` becomes the config's `xtc` section (method, layers...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = format.model_config(model, meta)
    save_file(format.model_tensors(model), out_dir / format.WEIGHTS,
              metadata={"format": "pt", "xtc_format": str(format.FORMAT_VERSION)})
    (out_dir / format.CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_packed(directory: Path) -> tuple[nn.Module, object]:
    """Rebuild the (fake-quantised) student from a packed directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    format.xtc_section(format.read_config(directory), directory)
    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: bad config.json ({exc})") from None
    archs.arch_of(config)
    settings = config.xtc
    try:
        tensors = load_file(directory / format.WEIGHTS)
    except (OSError, SafetensorError) as exc:
        raise XtcError(f"{directory}: corrupt or missing {format.WEIGHTS} ({str(exc)[:120]})") from None
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
                codes = torch.from_numpy(format.unpack_ints(tensors.pop(format.packed_name(name)).numpy(), bits, cols))
                state[f"{name}.weight"] = dequantize(codes, tensors.pop(format.scale_name(name)).float())
        tied = _tied_names(model)
        for name in model.state_dict():
            if name not in state and name not in tied:
                state[name] = tensors.pop(name)
    except KeyError as exc:
        raise XtcError(f"{directory}: {format.WEIGHTS} lacks tensor {exc}; is it from another model?") from None
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
