"""Vocabulary pruning: keep the tokens a code corpus uses, drop the rest of the embedding table.

SmolLM2's 49,152-token table (which doubles as the output head) is a third of a 50 MB student at 4
bits, yet Python code uses a fraction of it. `prune_vocab` counts the tokens of a corpus and writes
an ordinary Hugging Face model directory whose tokenizer and embedding table hold only the
`size` most used tokens (ids renumbered 0..size-1, in their old order), so every later step
(compress, eval, the runtime, export) takes it like any model, with no format of its own.

The tokenizer stays exact. A byte-level BPE token is made by a merge of two others; the kept set
holds the byte alphabet, the special tokens, and every token that a kept token is merged from, and
the merges whose result is dropped are removed. A text whose original tokens are all kept is
tokenized exactly as before (only renumbered); a rare word whose token was dropped is spelt with
the shorter kept tokens it is merged from. The pruned model is the teacher with its output
distribution restricted to the kept tokens.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.train.data import build_corpus
from xtc.train.load import load_model

SPECIAL_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def merge_pairs(model: dict) -> list[tuple[str, str]]:
    """A BPE model's merges as pairs (tokenizer.json stores "a b" strings or [a, b] lists)."""
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


def choose_tokens(tokenizer_json: dict, counts: np.ndarray, size: int) -> list[int]:
    """Old ids of at most `size` tokens: the byte alphabet and the added (special) tokens, then the
    most counted tokens each with every token it is merged from, while they fit."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise XtcError(f"vocabulary pruning needs a BPE tokenizer, not {model.get('type')}")
    vocab: dict[str, int] = model["vocab"]
    parents: dict[int, list[int]] = {}
    for a, b in merge_pairs(model):
        child = vocab.get(a + b)
        if child is not None and a in vocab and b in vocab:
            parents.setdefault(child, []).extend((vocab[a], vocab[b]))
    base = {i for i in vocab.values() if i not in parents} | {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    if len(base) > size:
        raise XtcError(f"--vocab-size {size} is below the {len(base)} tokens every text may need "
                       "(the byte alphabet and the special tokens)")
    keep = set(base)

    def with_ancestors(token: int) -> set[int]:
        found, todo = set(), [token]
        while todo:
            t = todo.pop()
            if t not in keep and t not in found:
                found.add(t)
                todo.extend(parents.get(t, ()))
        return found

    for token in np.argsort(-counts, kind="stable"):
        if counts[token] == 0 or len(keep) >= size:
            break
        new = with_ancestors(int(token))
        if len(keep) + len(new) <= size:
            keep |= new
    return sorted(keep)


def prune_tokenizer_json(tokenizer_json: dict, keep: list[int]) -> dict:
    """tokenizer.json holding only the kept tokens (renumbered) and the merges that make them."""
    new_id = {old: new for new, old in enumerate(keep)}
    out = copy.deepcopy(tokenizer_json)
    model = out["model"]
    model["vocab"] = {tok: new_id[i] for tok, i in model["vocab"].items() if i in new_id}
    kept = model["vocab"]
    model["merges"] = [list(pair) for pair in merge_pairs(model) if pair[0] + pair[1] in kept
                       and pair[0] in kept and pair[1] in kept]
    for token in out.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    special = (out.get("post_processor") or {}).get("special_tokens") or {}
    for entry in special.values():
        entry["ids"] = [new_id[i] for i in entry.get("ids", [])]
    return out


def _remap_special_ids(config: dict, new_id: dict[int, int]) -> None:
    for key in SPECIAL_ID_KEYS:
        value = config.get(key)
        if isinstance(value, int):
            config[key] = new_id.get(value)
        elif isinstance(value, list):
            config[key] = [new_id[v] for v in value if v in new_id]


def prune_embeddings(model: nn.Module, keep: list[int]) -> None:
    """The model's token embedding (and its output head, tied or not) reduced to the rows `keep`."""
    index = torch.tensor(keep)
    table = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is table.weight
    model.set_input_embeddings(nn.Embedding.from_pretrained(table.weight.detach()[index].clone(), freeze=False))
    if head is not None and not tied:
        new_head = nn.Linear(head.in_features, len(keep), bias=head.bias is not None)
        with torch.no_grad():
            new_head.weight.copy_(head.weight[index])
            if head.bias is not None:
                new_head.bias.copy_(head.bias[index])
        model.set_output_embeddings(new_head)
    elif tied:
        head.weight, head.out_features = model.get_input_embeddings().weight, len(keep)
    model.config.vocab_size = len(keep)


def count_tokens(tokens: torch.Tensor, vocab_size: int) -> np.ndarray:
    return np.bincount(tokens.numpy().astype(np.int64), minlength=vocab_size)[:vocab_size]


def prune_vocab(src: str, data_dirs: list[Path], out: Path, size: int,
                max_tokens: int | None = defaults.MAX_CORPUS_TOKENS, decontaminate=None) -> dict:
    """Count the tokens of the corpus under `data_dirs` (its training split), keep `size` of them,
    and write SRC with only those to `out`, a new Hugging Face directory. Returns a summary."""
    if out.exists():
        raise XtcError(f"--out {out}: already exists (give a new directory)")
    loaded = load_model(src)
    if loaded.packed:
        raise XtcError(f"{src}: a packed (quantised) model; prune the teacher's vocabulary, then compress it")
    model, tokenizer = loaded.model, loaded.tokenizer
    vocab_size = model.get_input_embeddings().weight.shape[0]
    if size >= vocab_size:
        raise XtcError(f"--vocab-size {size}: {src} has {vocab_size} tokens already")
    corpus = build_corpus(data_dirs, tokenizer, max_tokens, exclude=decontaminate)
    counts = count_tokens(corpus.train, vocab_size)
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())
    keep = choose_tokens(tokenizer_json, counts, size)
    new_id = {old: new for new, old in enumerate(keep)}

    prune_embeddings(model, keep)
    _remap_special_ids(model.config.__dict__, new_id)
    if getattr(model, "generation_config", None) is not None:
        _remap_special_ids(model.generation_config.__dict__, new_id)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tokenizer.json").write_text(json.dumps(prune_tokenizer_json(tokenizer_json, keep), ensure_ascii=False))
    cfg_path = out / "tokenizer_config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        decoder = cfg.get("added_tokens_decoder") or {}
        cfg["added_tokens_decoder"] = {str(new_id[int(i)]): v for i, v in decoder.items() if int(i) in new_id}
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    return {"model": loaded.name, "out": str(out), "vocab_size": vocab_size, "kept": len(keep),
            "counted_tokens": int(counts.sum()), "coverage": round(float(counts[keep].sum() / max(1, counts.sum())), 6),
            "corpus": corpus.describe()}
