"""Per-architecture adapters on torch models.

Where each architecture keeps its decoder layers, linear layers, embeddings and head is one table,
`xtc.core.format.LAYOUTS` (the runtime reads the same table from packed files); this module applies
it to transformers models for layer reduction, quantisation and packing. GPT-2 stores its linear
layers as `Conv1D` (weight laid out in x out); we convert those to `nn.Linear` so that the
quantisers see one layout.
"""

from __future__ import annotations

import torch
from torch import nn

from xtc.core.format import Layout, layout_of


def arch_of(config) -> Layout:
    """The layout for a transformers config; refuses architectures we cannot compress."""
    return layout_of(getattr(config, "model_type", None))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(arch_of(model.config).layers)


def set_decoder_layers(model: nn.Module, layers: list[nn.Module]) -> None:
    """Replace the decoder stack, keeping the config and KV-cache layer indices consistent."""
    arch = arch_of(model.config)
    parent_name, _, attr = arch.layers.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, nn.ModuleList(layers))
    setattr(model.config, arch.num_layers_key, len(layers))
    for new_index, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types is not None and len(layer_types) != len(layers):
        model.config.layer_types = [layer_types[0]] * len(layers)


def is_linear(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def as_linear(module: nn.Module) -> nn.Linear:
    """An `nn.Linear` computing the same function as `module` (a Linear or GPT-2's Conv1D)."""
    if isinstance(module, nn.Linear):
        return module
    weight = module.weight.detach().t()  # Conv1D stores (in, out)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None, device=weight.device)
    if weight.is_meta:  # structure only (a packed model being rebuilt)
        return linear
    with torch.no_grad():
        linear.weight.copy_(weight)
        if module.bias is not None:
            linear.bias.copy_(module.bias.detach())
    return linear


def block_linear_names(model: nn.Module) -> list[str]:
    """Dotted names of every linear layer inside the decoder blocks (what XTC quantises)."""
    prefix = arch_of(model.config).layers
    return [
        f"{prefix}.{name}"
        for name, module in decoder_layers(model).named_modules()
        if name and is_linear(module)
    ]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def layer_kwargs(model: nn.Module, seq_len: int, device=None) -> dict:
    """What a decoder layer needs besides its input to run on its own over positions 0..seq_len-1:
    Llama's rotary position tables (GPT-2 adds positions in the embeddings, so nothing)."""
    layout = arch_of(model.config)
    if layout.rotary is None:
        return {}
    rotary = model.get_submodule(layout.rotary)
    positions = torch.arange(seq_len, device=device)[None]
    with torch.no_grad():
        probe = torch.zeros(1, device=device, dtype=torch.float32)
        return {"position_embeddings": rotary(probe, positions)}


def run_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """One decoder layer on hidden states x (batch, seq, width), causal, no cache."""
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def boundary_states(model: nn.Module, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The hidden state at every decoder-block boundary (the first layer's input, then each layer's
    output) and the logits, from one forward pass."""
    layers = decoder_layers(model)
    states: list[torch.Tensor] = []

    def grab_input(module, args, kwargs):
        states.append((args[0] if args else kwargs["hidden_states"]).detach())

    def grab_output(module, args, output):
        states.append((output[0] if isinstance(output, tuple) else output).detach())

    hooks = [layers[0].register_forward_pre_hook(grab_input, with_kwargs=True)]
    hooks += [layer.register_forward_hook(grab_output) for layer in layers]
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits
    finally:
        for hook in hooks:
            hook.remove()
    return states, logits
