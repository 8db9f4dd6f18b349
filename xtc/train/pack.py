"""The packed model directory: weights at their real bit width on disk (format: `xtc.core.format`).

`save_packed` writes a student as the format stores it: per quantised linear layer and embedding
table its codes at their real width (8 binary weights per byte, 4 two-bit codes...) with fp16
scales and mins, everything else (norms, biases) in fp32.
`load_packed` rebuilds the fake-quantised student exactly (the runtime reads the same files
without torch: `xtc.infer.spec`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import save_file
from safetensors.numpy import load_file
from torch import nn

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.train import arch as archs
from xtc.train.quant import dequantize, quantize_embeddings, quantize_linears


def save_packed(model: nn.Module, tokenizer, out_dir: Path, meta: dict) -> Path:
    """Write the packed directory. `meta` becomes the config's `xtc` section (method, layers...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = format.model_config(model, meta)
    save_file(format.model_tensors(model), out_dir / format.WEIGHTS,
              metadata={"format": "pt", "xtc_format": str(format.FORMAT_VERSION)})
    (out_dir / format.CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # transformers writes tokenizer.json indented: twice the size (docs/pipeline.md)
        backend.save(str(out_dir / "tokenizer.json"), pretty=False)
    return out_dir


def load_packed(directory: Path) -> tuple[nn.Module, object]:
    """Rebuild the (fake-quantised) student from a packed directory (format v1 or v2)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    section = format.xtc_section(format.read_config(directory), directory)
    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: bad config.json ({exc})") from None
    archs.arch_of(config)
    try:
        tensors = load_file(directory / format.WEIGHTS)
    except (OSError, SafetensorError) as exc:
        raise XtcError(f"{directory}: corrupt or missing {format.WEIGHTS} ({str(exc)[:120]})") from None
    quant = format.read_quant(section, tensors)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        _quantize_like(model, quant, section.get("act_bits"))
    state = _unpacked_state(model, tensors, quant, section, directory)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    _materialise_buffers(model, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: cannot load the tokenizer ({exc})") from None
    return model.eval(), tokenizer


def _quantize_like(model: nn.Module, quant: dict[str, format.Quantizer], act_bits: int | None) -> None:
    """Give the (meta) model the quantised modules that `quant` describes."""
    tables = set(archs.arch_of(model.config).embeddings)
    linears = {name: q for name, q in quant.items() if name in set(archs.block_linear_names(model))}
    quantize_linears(model, linears, act_bits, list(linears))
    embed = next((q for name, q in quant.items() if name in tables), None)
    if embed is not None:
        quantize_embeddings(model, embed)


def _unpacked_state(model: nn.Module, tensors: dict[str, np.ndarray], quant: dict[str, format.Quantizer],
                    section: dict, directory: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    v1 = section["version"] < 2
    try:
        for name, module in model.named_modules():
            if name not in quant:
                continue
            q, rows, cols = quant[name], *module.weight.shape
            own = {key[len(name) + 1:]: value for key, value in tensors.items() if key.startswith(name + ".weight.")}
            if v1:
                bits = q.bits if q.levels > 3 else {2: 1, 3: 2}[q.levels]
                codes, scale, minimum = format.v1_affine(own[format.PACKED], own[format.SCALE], bits, cols)
            else:
                codes = format.unpack_codes(own, q.bits, cols)
                scale, minimum = own[format.SCALE], own[format.MIN]
            scale = torch.from_numpy(np.asarray(scale, np.float32))
            minimum = torch.from_numpy(np.asarray(minimum, np.float32))
            wg = torch.from_numpy(codes).float().reshape(rows, scale.shape[-1], -1)
            state[f"{name}.weight"] = dequantize(wg, scale, minimum).reshape(rows, cols)
            state[f"{name}.scale"], state[f"{name}.min"] = scale, minimum
        tied = _tied_names(model)
        for name in model.state_dict():
            if name not in state and name not in tied:
                state[name] = torch.from_numpy(np.array(tensors[name]))
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
