"""The prepared-layout cache: a packed model's `Spec` as the kernels read it (codes already in the
kernels' layouts, fused q/k/v and gate/up, tables, norms, rotary tables), written once after the
first load and memory-mapped by the next ones, so a start neither unpacks nor re-lays out (an
editor starts a server per window; the read-only mapping is also shared between them).

An entry is a folder of two files: `arrays.bin` (every array, 64-byte aligned) and
`manifest.json`, written last: the entry's key, the data's size, each array's offset, dtype and
shape, and the spec's objects as JSON (`_encode`). The key names the model's files (path, size,
mtime, inode), the packed format's version, this cache's `VERSION` and a hash of the code that
decides what a spec holds, so a changed model or code never reads an old entry. Entries are
written in a temporary folder and renamed into place; a failed write logs one line and the load
goes on without; an entry that does not read back (truncated, garbled, foreign) is removed and
rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from xtc.core import defaults
from xtc.core import format as format_lib
from xtc.infer import layers, layouts
from xtc.infer import spec as spec_lib
from xtc.infer.layers import (Addressed, AffineLinear, BinaryLinear, Block, DenseLinear, Norm, Spec, Split,
                              Table)

__all__ = ["VERSION", "Entry", "cache_root"]

log = logging.getLogger("xtc")

VERSION = 1  # of the entries' files and their JSON; bump when either changes
DATA, MANIFEST = "arrays.bin", "manifest.json"
ALIGN = 64  # a cache line: what the kernels' loads like best
CLASSES = {c.__name__: c for c in (Spec, Block, Norm, Table, DenseLinear, BinaryLinear, AffineLinear, Split)}
# Any edit to these changes the key: what a spec holds and its layouts are decided there.
_CODE = (layers, layouts, spec_lib, format_lib)
_STALE_TEMP_S = 600  # a temporary folder this old belongs to a writer that died


def cache_root() -> Path | None:
    """The folder holding the entries, or None when `XTC_PREPARED_CACHE` is "none"."""
    configured = (os.environ.get(defaults.PREPARED_CACHE_ENV) or "").strip()
    if configured.lower() == "none":
        return None
    if configured:
        return Path(configured).expanduser()
    base = (os.environ.get("XDG_CACHE_HOME") or "").strip()
    return (Path(base) if base else Path.home() / ".cache") / defaults.PREPARED_CACHE_DIR


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    digest = hashlib.sha256()
    for path in (*(m.__file__ for m in _CODE), __file__):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class Entry:
    """One model's entry: `load()` its spec (None: none yet, or unreadable), `save(spec)` after a load
    without. `Entry.of` gives None when the cache is off or the model's files cannot be listed."""

    def __init__(self, root: Path, model: Path, files: list, max_context: int):
        self.root = root
        self.key = {"version": VERSION, "format": format_lib.FORMAT_VERSION, "code": _code_hash(),
                    "model": str(model), "files": files, "max_context": max_context}
        # The first half names the model (and context): a new entry for it replaces the older ones.
        self.prefix = _digest([str(model), max_context])
        self.folder = root / f"{self.prefix}-{_digest(self.key)}"

    @classmethod
    def of(cls, directory: Path, max_context: int) -> "Entry | None":
        root = cache_root()
        if root is None:
            return None
        try:
            model = Path(directory).resolve()
            files = []
            for path in sorted(model.iterdir()):
                if path.name == format_lib.CONFIG or path.suffix == ".safetensors":
                    st = path.stat()
                    files.append([path.name, st.st_size, st.st_mtime_ns, st.st_ino])
        except OSError:
            return None  # the reader will say what is wrong with the directory
        return cls(root, model, files, max_context)

    # -- reading --------------------------------------------------------------------------------
    def load(self) -> Spec | None:
        try:
            text = (self.folder / MANIFEST).read_text()
        except FileNotFoundError:
            if self.folder.exists():  # a folder without its manifest is not one this module wrote whole
                self._discard("no manifest")
            return None
        except OSError as exc:
            log.warning("%s: prepared layout unreadable (%s); loading without it", self.folder, exc)
            return None
        try:
            manifest = json.loads(text)
            if manifest.get("key") != self.key:
                raise ValueError("written for another model or code")
            with open(self.folder / DATA, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != manifest["size"]:
                    raise ValueError(f"{DATA} holds {size} bytes, the manifest says {manifest['size']}")
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            arrays = [_view(data, size, *item) for item in manifest["arrays"]]
            spec = _decode(manifest["spec"], arrays, {})
            if not isinstance(spec, Spec):
                raise ValueError("no spec")
        except Exception as exc:  # anything wrong with an entry means rebuilding it, never a failed load
            self._discard(f"{exc.__class__.__name__}: {exc}")
            return None
        return spec

    def _discard(self, reason: str) -> None:
        log.warning("%s: prepared layout unreadable (%s); rebuilding it", self.folder, reason)
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- writing --------------------------------------------------------------------------------
    def save(self, spec: Spec) -> bool:
        """Write the entry (True when it is in place). Only full or read-only disks and the like
        fail, with one logged line; a spec this module cannot encode is a bug and raises."""
        arrays: list[np.ndarray] = []
        tree = _encode(spec, arrays, {}, {})
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{self.prefix}-", dir=self.root))
        except OSError as exc:
            log.warning("%s: prepared layout not cached (%s)", self.root, exc)
            return False
        try:
            table, offset = [], 0
            with open(temp / DATA, "wb") as f:
                for a in arrays:
                    pad = -offset % ALIGN
                    f.write(bytes(pad))
                    offset += pad
                    table.append([offset, a.dtype.str, list(a.shape)])
                    f.write(np.ascontiguousarray(a).data)
                    offset += a.nbytes
                f.flush()
                os.fsync(f.fileno())  # data on disk before the manifest that vouches for it
            with open(temp / MANIFEST, "w") as f:
                f.write(json.dumps({"key": self.key, "size": offset, "arrays": table, "spec": tree}))  # dumps: the C encoder
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(temp, self.folder)
            except OSError:
                if not (self.folder / MANIFEST).exists():
                    raise
                shutil.rmtree(temp, ignore_errors=True)  # another process wrote it first
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            log.warning("%s: prepared layout not cached (%s)", self.root, exc)
            return False
        self._prune()
        return True

    def _prune(self) -> None:
        """Remove this model's older entries, and temporary folders of writers that died."""
        try:
            for path in self.root.iterdir():
                if path.name.startswith(f"{self.prefix}-") and path != self.folder:
                    shutil.rmtree(path, ignore_errors=True)
                elif _TEMP.match(path.name) and time.time() - path.stat().st_mtime > _STALE_TEMP_S:
                    shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


# A writer's temporary folder (`mkdtemp(prefix=".DIGEST-")`): nothing else in the folder is ours to
# remove, whatever `XTC_PREPARED_CACHE` points at.
_TEMP = re.compile(r"\.[0-9a-f]{16}-\w+$")


def _view(data, size: int, offset: int, dtype: str, shape: list) -> np.ndarray:
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if dt.hasobject or offset < 0 or offset % ALIGN or count < 0 or offset + count * dt.itemsize > size:
        raise ValueError(f"array of {dtype} {shape} at {offset} outside {DATA}")
    if count == 0:
        return np.empty(shape, dt)
    return np.frombuffer(data, dt, count, offset).reshape(shape)


# -- the spec's objects as JSON ---------------------------------------------------------------------
# A node is a JSON scalar, a list of nodes, {"tuple": [nodes]}, {"array": index into the data's
# arrays}, {"object": class name, "id": n, "state": {attribute: node}} or {"ref": id} for an
# object met before (a tied head is the embedding table itself).
def _encode(value, arrays: list, array_ids: dict, object_ids: dict):
    """`value` as a node; its arrays appended to `arrays` (each once: `array_ids` maps id -> index)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"object array in a spec ({value.dtype})")
        if id(value) not in array_ids:
            array_ids[id(value)] = len(arrays)
            arrays.append(value)
        return {"array": array_ids[id(value)]}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, arrays, array_ids, object_ids) for v in value]
        return items if isinstance(value, list) else {"tuple": items}
    name = type(value).__name__
    if CLASSES.get(name) is type(value):
        if id(value) in object_ids:
            return {"ref": object_ids[id(value)]}
        object_ids[id(value)] = n = len(object_ids)
        state = value.__getstate__() if isinstance(value, Addressed) else vars(value)
        return {"object": name, "id": n,
                "state": {k: _encode(v, arrays, array_ids, object_ids) for k, v in state.items()}}
    raise TypeError(f"the prepared-layout cache cannot store a {name} ({value!r:.80})")


def _decode(node, arrays: list, objects: dict):
    if isinstance(node, list):
        return [_decode(v, arrays, objects) for v in node]
    if not isinstance(node, dict):
        return node
    if "array" in node:
        return arrays[node["array"]]
    if "tuple" in node:
        return tuple(_decode(v, arrays, objects) for v in node["tuple"])
    if "ref" in node:
        return objects[node["ref"]]
    cls = CLASSES[node["object"]]
    state = {k: _decode(v, arrays, objects) for k, v in node["state"].items()}
    obj = cls.__new__(cls)
    if isinstance(obj, Addressed):
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)
    objects[node["id"]] = obj
    return obj
