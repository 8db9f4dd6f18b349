"""The prepared-layout cache (xtc/infer/prepared.py): the second load of a packed model maps what the
first one wrote and computes the same logits; a changed model, a broken entry or a cache folder
that cannot be written never gives stale weights or a failed load."""

from __future__ import annotations

import copy
import logging
import os

import numpy as np
import pytest

from tests.test_runtime import TEXT, variant_quantizers
from tests.tiny import build_model
from xtc.core import format
from xtc.infer import layers, prepared
from xtc.infer.layers import AffineLinear, BinaryLinear, DenseLinear, Split
from xtc.infer.runtime import load_runtime
from xtc.train import pack
from xtc.train.quant import quantize_model

# Binary, int2, int3 and int4 matrices (a Split where q/k/v differ), 8-bit activations; and binary
# weights on fp32 activations (dense linears).
MIXED = ({"attn.c_attn": "int4", "mlp.c_proj": "int3", "c_fc": "binary", "v_proj": "int4", "k_proj": "int3",
          "down_proj": "int3", "gate_proj": "binary"}, 8, 32)
W1A32 = ("binary", None, None)


def student(tokenizer, arch: str, variant=MIXED, seed: int = 0):
    base, _ = build_model(arch, layers=2, width=64, heads=4, seed=seed, tokenizer=tokenizer)
    return quantize_model(base, variant_quantizers(base, variant[0], variant[2]), variant[1])


@pytest.fixture(scope="module")
def packed(tokenizer, tmp_path_factory):
    """(arch, variant name) -> a packed directory."""
    out = {}
    for arch in ("gpt2", "llama"):
        for name, variant in (("mixed", MIXED), ("w1a32", W1A32)):
            out[arch, name] = pack.save_packed(student(tokenizer, arch, variant), tokenizer,
                                               tmp_path_factory.mktemp(f"{arch}-{name}"), {"method": "quant"})
    return out


def logits(rt) -> np.ndarray:
    ids = rt.tokenizer.encode(TEXT)[:40]
    first = rt.prefill(ids)
    return np.stack([first, rt.step(int(np.argmax(first))), rt.step(3)])


def uncached(path, monkeypatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setenv("XTC_PREPARED_CACHE", "none")
        return logits(load_runtime(str(path)))


def entries(root=None) -> list:
    root = root or prepared.cache_root()
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


@pytest.fixture
def spies(monkeypatch):
    """Calls of the unpacking and re-layout a cached load skips."""
    calls = {"unpack_codes": 0, "affine_layout": 0}

    def spy(owner, name):
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)

    spy(format, "unpack_codes")
    spy(layers, "affine_layout")  # AffineLinear and BinaryLinear's AVX-512 tiles
    return calls


@pytest.mark.parametrize("kernels", ["best", "numpy"])
@pytest.mark.parametrize("name", ["mixed", "w1a32"])
def test_the_second_load_maps_the_cache_and_gives_identical_logits(packed, arch, name, kernels, spies, monkeypatch):
    if kernels == "numpy":
        monkeypatch.setenv("XTC_KERNELS", "numpy")
    path = packed[arch, name]
    first = load_runtime(str(path))
    assert spies["unpack_codes"] > 0 and len(entries()) == 1
    expected = logits(first)

    spies.update(dict.fromkeys(spies, 0))
    second = load_runtime(str(path))
    assert spies == {"unpack_codes": 0, "affine_layout": 0}
    linears = [lin for b in second.blocks for lin in (b.qkv, b.out, b.up, b.down)]
    kinds = {type(p) for lin in linears for p in (lin.parts if isinstance(lin, Split) else [lin])}
    assert kinds == ({AffineLinear, BinaryLinear} if name == "mixed" else {DenseLinear})
    mapped = [a for b in second.blocks for a in vars(b.out).values() if isinstance(a, np.ndarray)]
    assert mapped and not any(a.flags.writeable for a in mapped)  # the file's pages, not a copy
    if arch == "llama":
        assert second.spec.head is second.spec.embed  # a tied head stays one table
    np.testing.assert_array_equal(logits(second), expected)
    np.testing.assert_array_equal(expected, uncached(path, monkeypatch))


def test_a_changed_model_is_read_afresh_and_replaces_its_old_entry(packed, tokenizer, tmp_path, monkeypatch):
    path = pack.save_packed(student(tokenizer, "llama", seed=0), tokenizer, tmp_path / "model", {"method": "quant"})
    old = logits(load_runtime(str(path)))
    (old_entry,) = entries()
    pack.save_packed(student(tokenizer, "llama", seed=1), tokenizer, path, {"method": "quant"})
    new = logits(load_runtime(str(path)))
    assert not np.array_equal(new, old)
    np.testing.assert_array_equal(new, uncached(path, monkeypatch))
    (new_entry,) = entries()
    assert new_entry != old_entry


def test_code_and_context_are_part_of_the_key(packed, monkeypatch):
    path = packed["llama", "mixed"]
    a = prepared.Entry.of(path, 2048)
    assert prepared.Entry.of(path, 1024).folder != a.folder
    monkeypatch.setattr(prepared, "VERSION", prepared.VERSION + 1)
    assert prepared.Entry.of(path, 2048).folder != a.folder
    monkeypatch.setattr(prepared, "_code_hash", lambda: "edited")
    assert prepared.Entry.of(path, 2048).key["code"] == "edited"


def _truncate(entry):
    with open(entry / prepared.DATA, "r+b") as f:
        f.truncate(os.path.getsize(entry / prepared.DATA) // 2)


def _garble(entry):
    text = (entry / prepared.MANIFEST).read_text()
    (entry / prepared.MANIFEST).write_text(text[: len(text) // 2])


def _wrong_shapes(entry):
    text = (entry / prepared.MANIFEST).read_text()
    (entry / prepared.MANIFEST).write_text(text.replace('"arrays": [[0, ', '"arrays": [[0, "<f8", [99999999]], [0, '))


def _no_manifest(entry):
    (entry / prepared.MANIFEST).unlink()


@pytest.mark.parametrize("damage", [_truncate, _garble, _wrong_shapes, _no_manifest])
def test_a_broken_entry_is_rebuilt(packed, damage, spies, monkeypatch, caplog):
    path = packed["gpt2", "mixed"]
    expected = logits(load_runtime(str(path)))
    (entry,) = entries()
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="xtc"):
        rt = load_runtime(str(path))
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(logits(rt), expected)
    spies.update(dict.fromkeys(spies, 0))
    np.testing.assert_array_equal(logits(load_runtime(str(path))), expected)  # rewritten whole
    assert spies["unpack_codes"] == 0


def test_a_cache_folder_that_cannot_be_written_still_loads(packed, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XTC_PREPARED_CACHE", str(blocker / "prepared"))  # no folder can be made under a file
    path = packed["llama", "mixed"]
    with caplog.at_level(logging.WARNING, logger="xtc"):
        rt = load_runtime(str(path))
    assert len([r for r in caplog.records if "not cached" in r.getMessage()]) == 1
    np.testing.assert_array_equal(logits(rt), uncached(path, monkeypatch))


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("XTC_PREPARED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert prepared.cache_root() == tmp_path / "xdg" / "xtc" / "prepared"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert prepared.cache_root() == tmp_path / "home" / ".cache" / "xtc" / "prepared"
    monkeypatch.setenv("XTC_PREPARED_CACHE", "None")
    assert prepared.cache_root() is None


def test_a_copied_spec_recomputes_its_raw_addresses(packed):
    rt = load_runtime(str(packed["llama", "mixed"]))
    expected = logits(rt)
    rt.reset()
    original = rt.spec.blocks[0].out
    rt.spec.blocks[:] = copy.deepcopy(rt.spec.blocks)
    copied = rt.spec.blocks[0].out
    assert copied.ptrs[0] == copied.weights.ctypes.data != original.ptrs[0]
    np.testing.assert_array_equal(logits(rt), expected)


def test_only_its_own_stale_temporary_folders_are_removed(packed, tmp_path, monkeypatch):
    root = tmp_path / "shared"
    monkeypatch.setenv("XTC_PREPARED_CACHE", str(root))
    foreign, dead = root / ".ssh", root / ".0123456789abcdef-k3j_x9"  # another program's; a dead writer's
    for folder in (foreign, dead):
        folder.mkdir(parents=True)
        os.utime(folder, (1, 1))
    load_runtime(str(packed["llama", "mixed"]))
    assert foreign.exists() and not dead.exists()
