"""The packed format shared by the writer and the runtime: bit packing, the `xtc` section, sizes."""

import json

import numpy as np
import pytest

from xtc.core import format
from xtc.core.errors import XtcError
from xtc.core.sources import resolve


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("length", [8, 13, 64])
def test_pack_unpack_round_trip(bits, length):
    rng = np.random.default_rng(bits * 100 + length)
    qmax = 1 if bits == 1 else 2 ** (bits - 1) - 1
    codes = rng.integers(-qmax, qmax + 1, (5, length)).astype(np.int8)
    if bits == 1:
        codes = np.where(codes >= 0, 1, -1).astype(np.int8)
    packed = format.pack_ints(codes, bits)
    assert packed.shape[-1] == -(-length * bits // 8)  # ceil(length * bits / 8) bytes per row
    np.testing.assert_array_equal(format.unpack_ints(packed, bits, length), codes)


def test_one_bit_packing_is_little_endian_bits():
    """The runtime's kernels read bit j of byte i as weight 8 i + j (numpy's little bit order)."""
    codes = np.array([[1, -1, -1, 1, 1, 1, -1, -1, 1]], np.int8)
    np.testing.assert_array_equal(format.pack_ints(codes, 1),
                                  np.packbits(codes > 0, axis=1, bitorder="little"))


@pytest.mark.parametrize("version", [3, 0, "1", None, True])
def test_an_unknown_format_version_is_refused(tmp_path, version):
    config = {"model_type": "llama", "xtc": {"method": "quant"}}
    if version is not None:
        config["xtc"]["version"] = version
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(XtcError, match="newer than this xtc" if version == 3 else "unknown packed format version"):
        resolve(str(tmp_path))
    assert format.xtc_section({"xtc": {"version": format.FORMAT_VERSION}})["version"] == 2


def test_weight_files_mb_counts_weight_files_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 1_000_000)
    assert format.weight_files_mb(tmp_path) == 2.0
    assert format.weight_files_mb(tmp_path / "model.safetensors") == 2.0


def test_unsupported_architectures_are_named():
    with pytest.raises(XtcError, match="'bert'.*gpt2, llama"):
        format.layout_of("bert")
