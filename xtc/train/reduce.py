"""Layer reduction: the student keeps every other decoder layer of the teacher.

XTC initialises the student from the teacher's layers 1, 3, 5, ... (0-based odd indices, so the
last layer is kept for an even depth) together with its embeddings, final norm and head.
"""

from __future__ import annotations

import copy

from torch import nn

from xtc.core.errors import XtcError
from xtc.train import arch as archs


def select_layers(n_layers: int, keep: str = "odd") -> list[int]:
    """Teacher layer indices the student keeps: `odd`, `even`, or an explicit `i,j,k` list."""
    if keep == "odd":
        return list(range(1, n_layers, 2))
    if keep == "even":
        return list(range(0, n_layers, 2))
    try:
        chosen = [int(part) for part in keep.split(",") if part.strip()]
    except ValueError:
        raise XtcError(f"--keep-layers must be odd, even or a list like 1,3,5; got {keep!r}") from None
    if not chosen or any(i < 0 or i >= n_layers for i in chosen) or len(set(chosen)) != len(chosen):
        raise XtcError(f"--keep-layers {keep!r}: need distinct layer indices in 0..{n_layers - 1}")
    return sorted(chosen)


def reduce_layers(teacher: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of the teacher with only the `keep` decoder layers (initialised from the teacher)."""
    student = copy.deepcopy(teacher)
    layers = archs.decoder_layers(student)
    archs.set_decoder_layers(student, [layers[i] for i in keep])
    return student
