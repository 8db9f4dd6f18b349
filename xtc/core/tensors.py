"""A directory's safetensors file(s) as named numpy arrays, without torch: the one reader of the
runtime (`xtc.infer.spec`) and of the exporters (`xtc.export.weights`).

The `safetensors` library reads the files (framework "numpy"), one tensor at a time when asked.
numpy has no bfloat16, so the library cannot return a bf16 tensor; with `widen_bf16` the reader
reads its raw 16 bits (offsets from the file's header) and widens them to fp32, exactly.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from xtc.core.errors import XtcError


class Tensors:
    """Named tensors of a directory's `*.safetensors` files, read on demand. A corrupt file raises
    XtcError here; a tensor numpy cannot hold (bf16 unless widened, fp8...) raises TypeError from `[]`."""

    def __init__(self, directory: Path, widen_bf16: bool = True):
        from safetensors import safe_open

        self.files = sorted(Path(directory).glob("*.safetensors"))
        self.widen_bf16 = widen_bf16
        self.where: dict[str, tuple[Path, object]] = {}
        for f in self.files:
            try:
                handle = safe_open(str(f), framework="numpy")
                for key in handle.keys():
                    self.where[key] = (f, handle)
            except Exception as exc:  # a corrupt file
                reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:120]
                raise XtcError(f"{directory}: corrupt or unreadable {f.name} ({reason})") from None
        self._headers: dict[Path, tuple[int, dict]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def keys(self):
        return self.where.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        path, handle = self.where[key]
        dtype = handle.get_slice(key).get_dtype()
        if self.widen_bf16 and dtype == "BF16":
            return self._bf16(path, key)
        try:
            return handle.get_tensor(key)
        except (TypeError, AttributeError):  # how the library says numpy has no such type
            raise TypeError(f"{key}: numpy has no {dtype} type") from None

    def items(self):
        return ((key, self[key]) for key in self.where)

    def _bf16(self, path: Path, key: str) -> np.ndarray:
        """A bf16 tensor as fp32: its 16 bits are the upper half of the fp32 of the same value."""
        if path not in self._headers:  # safe_open has checked the header already
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                self._headers[path] = (8 + n, json.loads(f.read(n)))
        start, header = self._headers[path]
        begin, end = header[key]["data_offsets"]
        bits = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=start + begin)
        return (bits.astype(np.uint32) << 16).view(np.float32).reshape(header[key]["shape"])
