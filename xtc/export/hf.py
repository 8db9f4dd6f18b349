"""`xtc export SRC --format hf`: a plain Hugging Face directory that `transformers` loads.

    config.json        the architecture's config (no `xtc` section; `architectures` set, e.g.
                       LlamaForCausalLM; a layer-reduced student keeps its own, smaller layer count)
    model.safetensors  every weight under its Hugging Face name: fp32 by default (`--dtype f32`:
                       the student's dequantised weights exactly, so transformers computes what the
                       xtc runtime does without activation quantisation), fp16 with `--dtype f16`
                       (half the size, weights rounded to fp16)
    tokenizer files    tokenizer.json, tokenizer_config.json, ... as the source has them

Norms and biases are written in the same dtype as the weights (transformers loads one dtype).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.export.weights import TOKENIZER_FILES, Weights

DTYPES = {"f32": (np.float32, "float32"), "f16": (np.float16, "float16")}


def write_hf(weights: Weights, out: Path, dtype: str = "f32") -> Path:
    """Write the directory `out` (which must not exist yet, or be empty)."""
    np_dtype, name = DTYPES[dtype]
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in weights.tensors.items():
        if np.issubdtype(value.dtype, np.floating):
            value = np.asarray(value, np_dtype)
            if not np.isfinite(value).all():
                raise XtcError(f"{key} does not fit in {name}: export with --dtype f32")
        tensors[key] = np.ascontiguousarray(value)
    save_file(tensors, out / format.WEIGHTS, metadata={"format": "pt"})
    config = dict(weights.config)
    config.pop("torch_dtype", None)
    config["dtype"] = name
    (out / format.CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for file in TOKENIZER_FILES:
        if (weights.tokenizer_dir / file).is_file():
            shutil.copyfile(weights.tokenizer_dir / file, out / file)
    return out
