"""Teachers and students as torch models: any SRC, loaded for compression or evaluation with torch.

`resolve` decides what SRC is and refuses bad ones; a packed directory is rebuilt as the
fake-quantised student by `xtc.train.pack.load_packed`, everything else goes through transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from xtc.core.sources import Source, load_with_transformers, quiet_transformers, resolve
from xtc.train.pack import load_packed


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    name: str
    path: str  # where it came from (a directory, a .gguf file or a hub id)
    packed: bool = False


def load_model(src: str | Source) -> LoadedModel:
    """Resolve and load SRC; raise XtcError with a clear message if it cannot be used."""
    source = src if isinstance(src, Source) else resolve(src)
    quiet_transformers()
    if source.kind == "packed":
        model, tokenizer = load_packed(source.path)
    else:
        model, tokenizer = load_with_transformers(source)
    return LoadedModel(model, tokenizer, source.name, source.location, packed=source.kind == "packed")
