"""Model sources: every form of SRC the CLI and the server accept, resolved to a loaded model.

SRC is a packed directory, a Hugging Face directory, a `.gguf` file, the name of an installed
model, or a hub id (network only then). Architectures are checked before transformers sees the
files, so an unsupported model gets our one-line error rather than a stack trace.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xtc.train import arch as archs
from xtc.core.errors import XtcError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    name: str
    path: str  # where it came from (a directory, a .gguf file or a hub id)
    packed: bool = False


def read_config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise XtcError(f"{directory}: unreadable config.json ({exc.__class__.__name__})") from None


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _load_hf_dir(directory: Path) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    archs.arch_of(_config_namespace(read_config(directory)))
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:  # a broken user file fails in many ways inside transformers
        if isinstance(exc, XtcError):
            raise
        raise XtcError(f"{directory}: cannot load the model ({_short(exc)})") from None
    return model.eval(), tokenizer


def load_gguf(path: Path) -> tuple[nn.Module, object]:
    """Dequantise a GGUF file through transformers (slow: ~20-40 s for 135M; convert once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_gguf(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # a broken user file fails in many ways inside transformers
        if isinstance(exc, XtcError):
            raise
        raise XtcError(f"{path}: cannot read the GGUF file ({_short(exc)})") from None
    archs.arch_of(model.config)
    # The weights are dequantised now; drop the GGUF quantiser so the model saves and trains as fp32.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise XtcError(f"{path}: not a GGUF file (bad magic)")


def convert_gguf(path: Path, out_dir: Path) -> Path:
    """Write a GGUF file as a Hugging Face directory (safetensors), so later loads take ~1 s."""
    model, tokenizer = load_gguf(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _config_namespace(config: dict):
    from types import SimpleNamespace

    return SimpleNamespace(model_type=config.get("model_type"))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_model(src: str) -> LoadedModel:
    """Resolve and load SRC; raise XtcError with a clear message if it cannot be used."""
    from xtc.core import store
    from xtc.train import pack

    _quiet_transformers()
    path = Path(src).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / "config.json").exists():
                raise XtcError(f"{path}: not a model directory (no config.json)")
            if "xtc" in read_config(path):
                model, tokenizer = pack.load_packed(path)
                return LoadedModel(model, tokenizer, path.name, str(path), packed=True)
            model, tokenizer = _load_hf_dir(path)
            return LoadedModel(model, tokenizer, path.name, str(path))
        if path.suffix == ".gguf":
            model, tokenizer = load_gguf(path)
            return LoadedModel(model, tokenizer, path.stem, str(path))
        raise XtcError(f"{path}: not a model (expected a model directory or a .gguf file)")
    installed = store.Store().resolve(src)
    if installed is not None:
        loaded = load_model(str(installed))
        loaded.name = src
        return loaded
    if HUB_ID.match(src) and not src.startswith((".", "/", "~")):
        return _load_from_hub(src)
    raise XtcError(f"no model {src!r}: not a path, not an installed model (see `xtc list`), not a hub id")


def _load_from_hub(hub_id: str) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not hub_reachable():
        raise XtcError(f"cannot reach the Hugging Face hub to fetch {hub_id} (offline?); "
                       "use a local model instead, e.g. `xtc install smollm2`")
    try:
        archs.arch_of(AutoConfig.from_pretrained(hub_id))
        model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(hub_id)
    except XtcError:
        raise
    except Exception as exc:  # network and hub errors come in many types
        raise XtcError(f"{hub_id}: cannot load from the hub ({_short(exc)})") from None
    return LoadedModel(model.eval(), tokenizer, hub_id.split("/")[-1], hub_id)
