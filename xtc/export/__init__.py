"""`xtc export SRC --format gguf|hf --out PATH`: take a model (a packed student above all) to other
engines: a GGUF file for llama.cpp / Ollama (`xtc.export.gguf`), a Hugging Face directory for
transformers (`xtc.export.hf`).

Any SRC works (packed directory, Hugging Face directory, .gguf file, installed name, hub id). A
packed student's weights are dequantised from its codes (`xtc.export.weights`): the export holds
exactly the student's weights, at fp16 or fp32, so it is as large as an uncompressed model of
the student's shape (a layer-reduced student keeps its fewer layers). What the export cannot carry
is xtc's 8-bit activation quantisation, a rule of the xtc runtime: other engines run the
activations in their own precision, so their outputs differ from xtc's by that rounding.

Packed and Hugging Face (safetensors) sources are read with numpy only; other sources load
through transformers (torch).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.core.sources import resolve

FORMATS = ("gguf", "hf")
DTYPES = ("f16", "f32")
DEFAULT_DTYPE = {"gguf": "f16", "hf": "f32"}


def check_out(out: Path, fmt: str) -> None:
    """XtcError unless `out` is a new path for this format (an export never overwrites)."""
    if fmt == "gguf":
        if out.suffix != ".gguf":
            raise XtcError(f"--out {out}: a GGUF file's name must end in .gguf")
        if out.exists():
            raise XtcError(f"--out {out}: already exists; choose a new path (export never overwrites)")
    elif out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise XtcError(f"--out {out}: already exists; choose a new or empty directory (export never overwrites)")


def export(src: str, fmt: str, out: Path, dtype: str | None = None) -> dict:
    """Export SRC to `out`; a summary of what was written."""
    if fmt not in FORMATS:
        raise XtcError(f"unknown export format {fmt!r}: choose {' or '.join(FORMATS)}")
    dtype = dtype or DEFAULT_DTYPE[fmt]
    if dtype not in DTYPES:
        raise XtcError(f"unknown dtype {dtype!r}: choose {' or '.join(DTYPES)}")
    out = Path(out).expanduser()
    check_out(out, fmt)
    source = resolve(src)
    from xtc.export.weights import read_weights

    with tempfile.TemporaryDirectory(prefix="xtc-export-") as scratch:
        weights = read_weights(source, Path(scratch))
        notes = []
        if weights.act_bits:
            notes.append(f"the student runs with {weights.act_bits}-bit activations in xtc; the export holds its "
                         "weights only, other engines run activations in their own precision")
        description = (f"Exported by xtc from {weights.name} ({source.kind}"
                       + (f", {len(weights.quantized)} quantised matrices dequantised" if weights.quantized else "")
                       + f"), weights in {dtype}." + "".join(f" Note: {n}." for n in notes))
        # Written next to the target, then renamed: an interrupted export leaves no half file at `out`.
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
        try:
            if fmt == "gguf":
                from xtc.export.gguf import write_gguf

                write_gguf(weights, partial, dtype, description.strip())
            else:
                from xtc.export.hf import write_hf

                write_hf(weights, partial, dtype)
            if out.is_dir():  # an empty directory
                out.rmdir()
            os.replace(partial, out)
        finally:
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            elif partial.exists():
                partial.unlink()
    layers = weights.config[weights.layout.num_layers_key]
    return {"model": src, "source": source.kind, "format": fmt, "dtype": dtype, "out": str(out),
            "architecture": weights.layout.name, "layers": layers, "tensors": len(weights.tensors),
            "dequantized": len(weights.quantized), "act_bits": weights.act_bits, "disk_mb": round(format.weight_files_mb(out), 2),
            "notes": notes}
