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
