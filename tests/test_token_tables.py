"""The completer's vocabulary tables (xtc/infer/complete.py), built once per start with string
methods and NumPy, equal the straightforward per-character ones: for a byte-level vocabulary
(SmolLM2's, a tiny one with added tokens that are not all byte-level characters) and a
SentencePiece-style one with byte-fallback pieces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xtc.infer import complete
from xtc.infer.complete import Completer
from xtc.infer.tokenizer import FastTokenizer, decode_exact

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "smollm2-mixed-30l"


def reference_tables(tokenizer, n: int) -> dict:
    """The tables as first written: one character, one byte, one token at a time."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i in getattr(tokenizer, "added_tokens_decoder", {}) if tokenizer.added_tokens_decoder[i].special}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    alphabet = complete._bytes_to_unicode()
    byte_of = {c: b for b, c in alphabet.items()}
    byte_level = alphabet[ord(" ")] in pieces
    texts, data = [], []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            texts.append("")
            data.append(b"")
            continue
        fallback = None if byte_level else complete._BYTE_FALLBACK.fullmatch(piece)
        if byte_level and all(c in byte_of for c in piece):
            raw = bytes(byte_of[c] for c in piece)
        elif fallback:
            raw = bytes([int(fallback.group(1), 16)])
        else:
            text = decode_exact(tokenizer, [i])
            texts.append(text)
            data.append(text.encode("utf-8"))
            continue
        texts.append(raw.decode("utf-8", errors="ignore"))
        data.append(raw)
    order = sorted((b, i) for i, b in enumerate(data[:n]) if b)
    ids_by_bytes: dict[bytes, list[int]] = {}
    for b, i in order:
        ids_by_bytes.setdefault(b, []).append(i)
    blank_newline = np.zeros(n, dtype=bool)
    for i, text in enumerate(texts[:n]):
        if "\n" in text and not text.split("\n", 1)[0].strip():
            blank_newline[i] = True
    ends_name = np.array([bool(b) and not complete._identifier_byte(b[0]) for b in data[:n]]
                         + [False] * (n - len(data[:n])), dtype=bool)
    banned = np.zeros(n, dtype=bool)
    banned[len(texts):] = True
    return {"texts": texts, "bytes": data, "special": special, "sorted_bytes": [b for b, _ in order],
            "sorted_ids": [i for _, i in order], "ids_by_bytes": ids_by_bytes, "blank_newline": blank_newline,
            "ends_name": ends_name, "padded": banned}


class Vocabulary:
    """Just what `Completer.__init__` reads of a runtime."""

    def __init__(self, tokenizer, padding: int = 0):
        self.tokenizer, self.vocab_size, self.max_context = tokenizer, len(tokenizer) + padding, 512


def assert_same_tables(tokenizer, padding: int = 0) -> None:
    rt = Vocabulary(tokenizer, padding)
    want = reference_tables(tokenizer, rt.vocab_size)
    texts, data, special = complete._token_texts(tokenizer)
    assert (texts, data, special) == (want["texts"], want["bytes"], want["special"])
    got = Completer(rt)
    assert got.texts == want["texts"] and got.bytes == want["bytes"]
    assert got.sorted_bytes == want["sorted_bytes"]
    assert got.sorted_ids.dtype == np.int64 and got.sorted_ids.tolist() == want["sorted_ids"]
    assert got.ids_by_bytes == want["ids_by_bytes"]
    np.testing.assert_array_equal(got.blank_newline, want["blank_newline"])
    np.testing.assert_array_equal(got.ends_name, want["ends_name"])
    np.testing.assert_array_equal(got.banned[len(tokenizer):], want["padded"][len(tokenizer):])


@pytest.mark.skipif(not (SHIPPED / "tokenizer.json").exists(), reason="the shipped model is not in this checkout")
def test_shipped_vocabulary():
    assert_same_tables(FastTokenizer(SHIPPED))


def test_byte_level_vocabulary_with_added_tokens():
    from tokenizers import AddedToken

    from tests.tiny import build_tokenizer

    tokenizer = build_tokenizer(extra_special=("<filename>",))
    # Added tokens are stored as typed: a space, a newline, a soft hyphen (below 256, not in the
    # byte-level alphabet: its UTF-8 is two bytes), "é" (in the alphabet), "你" (above it).
    tokenizer.add_tokens([AddedToken(text, special=False) for text in ("hello world", "\n\n    ", "soft\xadhyphen",
                                                                       "café", "你好")])
    assert_same_tables(tokenizer, padding=5)  # padded rows past the vocabulary, as models round it up


def test_byte_fallback_vocabulary(tmp_path):
    from tokenizers import Tokenizer, decoders, models, normalizers

    pieces = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)),
              "▁", "▁def", "▁main", "():", "\n", "▁▁▁▁", "return", "_x", "é", "▁(", "你"]
    model = models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[], byte_fallback=True, unk_token="<unk>")
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                                "unk_token": "<unk>"}))
    assert_same_tables(FastTokenizer(tmp_path), padding=3)
