"""Layer reduction: which teacher layers the student keeps, and what each kept layer stands for.

- `odd` / `even`: XTC's choice for BERT, every other layer (1, 3, 5, ... keeps the last layer).
- an explicit list `i,j,k`.
- `auto`: by measurement. Removing a contiguous run of deep layers hurts decoder LLMs least when
  the hidden state barely turns across the run (Gromov et al., "The Unreasonable Ineffectiveness
  of the Deeper Layers"; ShortGPT's block influence is the one-layer case): drop the run of n
  layers whose input and output have the smallest mean angular distance over the cached tokens.

The student is initialised from the kept layers with the teacher's embeddings, final norm and head.
Student layer i stands for the teacher's span of layers from its own up to the next kept one
(`spans`): block-wise training maps that span's input to its output.
"""

from __future__ import annotations

import copy

import numpy as np
from torch import nn

from xtc.core.errors import XtcError
from xtc.train import arch as archs


def select_layers(n_layers: int, keep: str = "odd") -> list[int]:
    """Teacher layer indices the student keeps: `odd`, `even`, or an explicit `i,j,k` list
    (`auto` needs measurements: `choose_layers`)."""
    if keep == "odd":
        return list(range(1, n_layers, 2))
    if keep == "even":
        return list(range(0, n_layers, 2))
    try:
        chosen = [int(part) for part in keep.split(",") if part.strip()]
    except ValueError:
        raise XtcError(f"--keep-layers must be odd, even, auto or a list like 1,3,5; got {keep!r}") from None
    if not chosen or any(i < 0 or i >= n_layers for i in chosen) or len(set(chosen)) != len(chosen):
        raise XtcError(f"--keep-layers {keep!r}: need distinct layer indices in 0..{n_layers - 1}")
    return sorted(chosen)


def reduce_layers(teacher: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of the teacher with only the `keep` decoder layers (initialised from the teacher)."""
    student = copy.deepcopy(teacher)
    layers = archs.decoder_layers(student)
    archs.set_decoder_layers(student, [layers[i] for i in keep])
    return student


def angular_distances(hidden, n_drop: int, max_tokens: int = 16384) -> np.ndarray:
    """Mean angular distance (arccos of the cosine, over pi) between the hidden states at block
    boundaries l and l + n_drop, for every start l; `hidden` is (boundaries, windows, seq, width)."""
    boundaries, windows, seq, width = hidden.shape
    take = max(1, min(windows, max_tokens // seq))
    starts = boundaries - n_drop
    out = np.zeros(starts)
    for l in range(starts):
        a = np.asarray(hidden[l, :take], np.float32).reshape(-1, width)
        b = np.asarray(hidden[l + n_drop, :take], np.float32).reshape(-1, width)
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-6)
        out[l] = float(np.mean(np.arccos(np.clip(cos, -1.0, 1.0)) / np.pi))
    return out


def choose_layers(hidden, n_keep: int) -> list[int]:
    """Keep `n_keep` layers: drop the contiguous run whose removal turns the hidden state least."""
    n_layers = hidden.shape[0] - 1
    if not 1 <= n_keep <= n_layers:
        raise XtcError(f"cannot keep {n_keep} of {n_layers} layers")
    n_drop = n_layers - n_keep
    if n_drop == 0:
        return list(range(n_layers))
    start = int(np.argmin(angular_distances(hidden, n_drop)))
    return [i for i in range(n_layers) if not start <= i < start + n_drop]


def spans(kept: list[int], n_layers: int) -> list[tuple[int, int]]:
    """The teacher boundaries (input, output) each student layer stands for: from its own layer up
    to the next kept one; the first starts at the embeddings, the last ends at the top."""
    edges = [0] + kept[1:] + [n_layers]
    return list(zip(edges[:-1], edges[1:]))
