"""Bit widths by measured sensitivity: which block matrices get more bits when the size is fixed.

Every block linear is quantised alone (round-to-nearest on its fitted grid, 8-bit inputs as in
training) at each candidate format, and its damage is measured the way the block stage measures
error: the block loss (relative squared error per token) of its layer's output on cached teacher
inputs, against the same layer unquantised. Then a greedy knapsack (as HAWQ-style mixed-precision
search does) starts every matrix at the base format and keeps moving up the matrix whose next
format removes the most measured error per added byte, while the packed model fits the budget.

Errors are measured before any training, so they rank matrices rather than predict the trained
student's error; per-matrix errors are summed as if independent.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xtc.core.defaults import WEIGHT_FORMATS
from xtc.core.errors import XtcError
from xtc.core.format import Quantizer
from xtc.train import arch as archs
from xtc.train.blockwise import block_loss
from xtc.train.quant import QuantLinear, quantizer

HEADER_BYTES_PER_TENSOR = 120  # safetensors' JSON header (112 per tensor in the shipped student)


@dataclass
class Allocation:
    formats: dict[str, str]  # block linear (dotted name) -> format
    errors: dict[str, dict[str, float]]  # block linear -> format -> measured error
    megabytes: float  # the packed weights' estimated size


def ladder(base: str, top: str = "int4") -> list[str]:
    """The formats a matrix may take: `base` and those above it, up to `top`."""
    if base not in WEIGHT_FORMATS or top not in WEIGHT_FORMATS:
        raise XtcError(f"formats to allocate are {', '.join(WEIGHT_FORMATS)}, not {base!r} or {top!r}")
    lo, hi = WEIGHT_FORMATS.index(base), WEIGHT_FORMATS.index(top)
    if hi <= lo:
        raise XtcError(f"nothing to allocate above {base}: the top format {top} is not wider")
    return list(WEIGHT_FORMATS[lo:hi + 1])


def stored_bytes(shape: tuple[int, int], q: Quantizer) -> float:
    """Bytes of a (rows, cols) matrix in the packed format: codes at their width, fp16 scale and min."""
    rows, cols = shape
    return rows * cols * q.bits_per_weight(cols) / 8


def packed_megabytes(model: nn.Module, quantizers: dict[str, Quantizer], embed: Quantizer | None) -> float:
    """The packed weights file's size: block linears in their formats, the embedding tables in
    `embed` (None: fp32), every other parameter (norms, biases) fp32, and the file's header."""
    arch = archs.arch_of(model.config)
    tables = set(arch.embeddings) if embed is not None else set()
    total, tensors, seen = 0.0, 0, set()
    for name, module in model.named_modules():
        if name in quantizers or name in tables:
            q = quantizers.get(name) or embed
            weight = archs.as_linear(module).weight if name in quantizers else module.weight
            seen.add(id(weight))
            total += stored_bytes(tuple(weight.shape), q)
            tensors += 4 if q.bits == 3 else 3  # codes (3-bit: two fields), scale, min
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += 4 * p.numel()
            tensors += 1
    return (total + HEADER_BYTES_PER_TENSOR * tensors) / 1e6


@torch.no_grad()
def layer_sensitivity(layer: nn.Module, x: torch.Tensor, kwargs: dict, formats: list[str], group: int | None,
                      act_bits: int | None) -> dict[str, dict[str, float]]:
    """Block loss of `layer`'s output on inputs `x` with one of its linears quantised at each format
    (the others unquantised), against the unquantised layer: {linear name in layer: {format: error}}."""
    layer.eval()
    reference = archs.run_layer(layer, x, kwargs)
    errors: dict[str, dict[str, float]] = {}
    for name, module in list(layer.named_modules()):
        if not name or not archs.is_linear(module):
            continue
        errors[name] = {}
        for fmt in formats:
            archs.replace_module(layer, name, QuantLinear(archs.as_linear(module), quantizer(fmt, group), act_bits))
            errors[name][fmt] = block_loss(archs.run_layer(layer, x, kwargs), reference).item()
        archs.replace_module(layer, name, module)
    return errors


def measure(student: nn.Module, inputs: list[np.ndarray], kwargs: dict, formats: list[str], group: int | None,
            act_bits: int | None, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Every block linear's error at each format; `inputs[i]`: (windows, seq, width) inputs of layer i."""
    prefix = archs.arch_of(student.config).layers
    errors = {}
    for i, layer in enumerate(archs.decoder_layers(student)):
        x = torch.from_numpy(np.asarray(inputs[i], np.float32)).to(device)
        for name, by_format in layer_sensitivity(layer, x, kwargs, formats, group, act_bits).items():
            errors[f"{prefix}.{i}.{name}"] = by_format
    return errors


def allocate(student: nn.Module, errors: dict[str, dict[str, float]], formats: list[str], group: int | None,
             embed: Quantizer | None, target_mb: float) -> Allocation:
    """Formats per block linear (from `formats`, lowest first) that fit `target_mb`, moving up the
    matrices whose next format buys the most measured error per byte first."""
    chosen = {name: formats[0] for name in errors}
    base_mb = packed_megabytes(student, {n: quantizer(f, group) for n, f in chosen.items()}, embed)
    if base_mb > target_mb:
        raise XtcError(f"the student takes {base_mb:.1f} MB with every matrix at {formats[0]}, over the "
                       f"{target_mb:g} MB target: lower the base --weight-format, cut layers or raise the target")
    shapes = {name: tuple(archs.as_linear(student.get_submodule(name)).weight.shape) for name in errors}

    def upgrade(name: str) -> tuple[float, float, str] | None:
        """(-error removed per MB, MB added, next format) of moving `name` up one format."""
        now = formats.index(chosen[name])
        if now + 1 == len(formats):
            return None
        nxt = formats[now + 1]
        added = (stored_bytes(shapes[name], quantizer(nxt, group)) -
                 stored_bytes(shapes[name], quantizer(chosen[name], group))) / 1e6
        gain = errors[name][chosen[name]] - errors[name][nxt]
        return -gain / max(added, 1e-9), added, nxt  # ternary -> int2 is free: same width, more levels

    heap = [(*u, name) for name in errors if (u := upgrade(name)) is not None]
    heapq.heapify(heap)
    used = base_mb
    while heap:
        priority, added, nxt, name = heapq.heappop(heap)
        if priority >= 0:  # no error left to buy
            break
        if used + added > target_mb:
            continue  # too big now; a smaller upgrade may still fit
        chosen[name], used = nxt, used + added
        if (u := upgrade(name)) is not None:
            heapq.heappush(heap, (*u, name))
    return Allocation(chosen, errors, used)


def describe(formats: dict[str, str]) -> dict[str, dict[str, int]]:
    """How many layers gave each matrix kind (`self_attn.q_proj`, ...) each format."""
    counts: dict[str, dict[str, int]] = {}
    for name, fmt in formats.items():
        kind = ".".join(name.split(".")[-2:])
        counts.setdefault(kind, {}).setdefault(fmt, 0)
        counts[kind][fmt] += 1
    return counts
