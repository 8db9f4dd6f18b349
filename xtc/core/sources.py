"""Model sources: every form of SRC the CLI and the server accept, resolved in one place.

SRC is a packed directory, a Hugging Face directory, a `.gguf` file, the name of an installed
model ("" = the installed default), or a hub id (network only then). `resolve` decides which,
and checks what it can without loading weights: a readable config.json, a supported
architecture, a known packed format version, the GGUF magic, a reachable hub (within
`defaults.HUB_TIMEOUT_S`). So every command and the server give the same one-line error for the
same bad SRC, and unsupported models are refused before transformers sees the files.

Loading is the caller's: `xtc.infer.runtime.load_runtime` (numpy, for completion) and
`xtc.train.load.load_model` (torch, for compression) both start from `resolve`.
`load_with_transformers` is the transformers route they share for sources without a direct
reader; it imports transformers (and so torch) only when called.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from xtc.core import defaults, format
from xtc.core.errors import XtcError
from xtc.core.store import Store

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
KINDS = ("packed", "hf", "gguf", "hub")


@dataclass
class Source:
    """A resolved SRC."""

    kind: str  # one of KINDS
    path: Path | None  # the model directory or .gguf file; None for a hub id
    name: str  # what to call it (an installed model's name, the directory's name, the hub id's last part)
    hub_id: str | None = None
    config: dict | None = None  # a directory's config.json

    @property
    def location(self) -> str:
        """Where it comes from: the directory, the .gguf file or the hub id."""
        return self.hub_id if self.path is None else str(self.path)


def resolve(src: str, store: Store | None = None, allow_hub: bool = True) -> Source:
    """The Source for SRC; XtcError with a clear message if it cannot be used. With allow_hub=False
    (the language server) a hub id is refused without touching the network."""
    if not src.strip():
        store = store or Store()
        name = store.default_name()
        if name is None:
            raise XtcError("no model installed")
        return _local(store.resolve(name), name)
    path = Path(src).expanduser()
    if path.exists():
        return _local(path, path.stem if path.is_file() else path.name)
    if not src.startswith((".", "/", "~")):
        installed = (store or Store()).resolve(src)
        if installed is not None:
            return _local(installed, src)
        if HUB_ID.match(src) and not allow_hub:
            raise XtcError(f"no model {src!r} here (the server never downloads): "
                           "run `xtc install smollm2` or set xtc.model to a model's path")
        if HUB_ID.match(src):
            if not hub_reachable():
                raise XtcError(f"cannot reach the Hugging Face hub to fetch {src} (offline?); "
                               "use a local model instead, e.g. `xtc install smollm2`")
            return Source("hub", None, src.split("/")[-1], hub_id=src)
    raise XtcError(f"no model {src!r}: not a path, not an installed model (see `xtc list`), not a hub id")


def _local(path: Path, name: str) -> Source:
    if path.is_dir():
        if not (path / format.CONFIG).exists():
            raise XtcError(f"{path}: not a model directory (no {format.CONFIG})")
        config = format.read_config(path)
        format.layout_of(config.get("model_type"))
        if format.is_packed(config):
            format.xtc_section(config, path)
            return Source("packed", path, name, config=config)
        return Source("hf", path, name, config=config)
    if path.suffix == ".gguf":
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise XtcError(f"{path}: not a GGUF file (bad magic)")
        return Source("gguf", path, name)
    raise XtcError(f"{path}: not a model (expected a model directory or a .gguf file)")


def hub_reachable(host: str = defaults.HUB_HOST, timeout: float = defaults.HUB_TIMEOUT_S) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


# -- the transformers route (imports torch when called) -----------------------------------------
def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_with_transformers(source: Source) -> tuple[object, object]:
    """(fp32 transformers model in eval mode, tokenizer) for a Hugging Face directory, a .gguf file
    (dequantised, slowly: docs/commands.md; install it once to convert it) or a hub id. A packed
    directory needs xtc's own loader, `xtc.train.pack.load_packed`."""
    if source.kind not in ("hf", "gguf", "hub"):
        raise ValueError(f"transformers cannot load a {source.kind} source")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    where = source.location
    try:
        if source.kind == "hf":
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(source.path)
        elif source.kind == "gguf":
            gguf = {"gguf_file": source.path.name}
            model = AutoModelForCausalLM.from_pretrained(source.path.parent, dtype=torch.float32, **gguf)
            tokenizer = AutoTokenizer.from_pretrained(source.path.parent, **gguf)
        else:
            format.layout_of(AutoConfig.from_pretrained(source.hub_id).model_type)
            model = AutoModelForCausalLM.from_pretrained(source.hub_id, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(source.hub_id)
    except XtcError:
        raise
    except Exception as exc:
        if not _broken_source(exc):  # a bug (ours or a library's): keep its traceback
            raise
        what = {"hf": "cannot load the model", "gguf": "cannot read the GGUF file",
                "hub": "cannot load from the hub"}[source.kind]
        raise XtcError(f"{where}: {what} ({_short(exc)})") from None
    if source.kind == "gguf":
        format.layout_of(model.config.model_type)
        # The weights are dequantised now; drop the GGUF quantiser so the model saves and trains as fp32.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model.eval(), tokenizer


def _broken_source(exc: BaseException) -> bool:
    """Whether transformers failed because of what the user gave it (a missing, corrupt or
    mismatched file, an unreachable hub, a missing optional package such as gguf) rather than
    because of a bug. Called once transformers is imported, so its dependencies are too."""
    import struct

    from huggingface_hub import errors as hub_errors
    from safetensors import SafetensorError

    kinds = [OSError, ValueError, KeyError, ImportError, struct.error, SafetensorError]  # OSError: EnvironmentError
    kinds += [k for k in (getattr(hub_errors, "HTTPError", None), getattr(hub_errors, "StrictDataclassError", None)) if k]
    if isinstance(exc, tuple(kinds)):  # ValueError includes JSON and Unicode decoding errors
        return True
    # Weights of another shape than the config says: torch and transformers raise RuntimeError.
    return isinstance(exc, RuntimeError) and "mismatch" in str(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]
