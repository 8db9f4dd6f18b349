"""A model directory's tokenizer without transformers (importing transformers would import torch):
`FastTokenizer` reads `tokenizer.json` with the `tokenizers` library."""

from __future__ import annotations

import json
from pathlib import Path


class _Added:
    def __init__(self, content: str, special: bool):
        self.content, self.special = content, special


class FastTokenizer:
    """The parts of a transformers tokenizer that completion uses, over `tokenizers` directly
    (importing transformers would import torch)."""

    SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")

    def __init__(self, directory: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        cfg_path = directory / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.clean_up_tokenization_spaces = bool(cfg.get("clean_up_tokenization_spaces", False))
        self.added_tokens_decoder = {i: _Added(t.content, bool(t.special))
                                     for i, t in self._tok.get_added_tokens_decoder().items()}
        names = {}
        for key in self.SPECIAL_KEYS:
            value = cfg.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            names[key] = value
        extra = cfg.get("additional_special_tokens") or cfg.get("extra_special_tokens") or []
        if isinstance(extra, dict):
            extra = list(extra.values())
        extra = [t.get("content") if isinstance(t, dict) else t for t in extra]
        for key, value in names.items():
            setattr(self, key, value)
            setattr(self, f"{key}_id", self._tok.token_to_id(value) if value else None)
        special = [v for v in list(names.values()) + extra if v]
        self.all_special_tokens = list(dict.fromkeys(special))
        self.all_special_ids = [i for i in (self._tok.token_to_id(t) for t in self.all_special_tokens) if i is not None]

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        if isinstance(ids, int):
            ids = [ids]
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        if clean:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._tok.id_to_token(ids)
        return [self._tok.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            i = self._tok.token_to_id(tokens)
            return i if i is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)


def decode_exact(tokenizer, ids) -> str:
    """The text of `ids` exactly as the model wrote it, from a FastTokenizer or a transformers
    tokenizer: special tokens kept, and never `clean_up_tokenization_spaces` (GPT-2 and CodeGPT
    configs set it, and it rewrites code: `x = 'sys'` would become `x ='sys'`)."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def load_tokenizer(directory: Path) -> FastTokenizer | None:
    """The directory's `tokenizer.json` as a FastTokenizer, or None when there is none or it is
    unusual (transformers knows more formats)."""
    if (directory / "tokenizer.json").exists():
        try:
            return FastTokenizer(directory)
        except Exception:  # an unusual tokenizer file: transformers knows more formats
            pass
    return None
