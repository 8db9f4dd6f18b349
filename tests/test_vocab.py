"""Vocabulary pruning (`xtc prune-vocab`): the kept tokens tokenize exactly as before, the rest are
spelt with the tokens they are merged from, and the pruned model is the teacher restricted to them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from tests.test_cli import run, run_json
from xtc.infer.complete import Completer
from xtc.infer.runtime import load_runtime
from xtc.train.vocab import choose_tokens, merge_pairs, prune_tokenizer_json

TEXT = "def read_lines(path):\n    with open(path) as handle:\n        return handle.read().splitlines()\n"


@pytest.fixture(scope="module")
def tokenizer_json(tokenizer):
    return json.loads(tokenizer.backend_tokenizer.to_str())


def counts_of(tokenizer, text: str) -> np.ndarray:
    return np.bincount(tokenizer(text)["input_ids"], minlength=len(tokenizer))


def test_the_kept_tokens_are_the_most_used_with_the_alphabet_specials_and_every_token_they_are_merged_from(
        tokenizer, tokenizer_json):
    counts = counts_of(tokenizer, TEXT)
    keep = choose_tokens(tokenizer_json, counts, 400)
    assert len(keep) <= 400 and keep == sorted(keep)
    vocab = tokenizer_json["model"]["vocab"]
    made = {a + b for a, b in merge_pairs(tokenizer_json["model"])}
    alphabet = {i for t, i in vocab.items() if t not in made}
    assert alphabet <= set(keep) and 0 in keep  # the byte alphabet and <|endoftext|>
    kept_strings = {t for t, i in vocab.items() if i in keep}
    for a, b in merge_pairs(tokenizer_json["model"]):
        if a + b in kept_strings:
            assert a in kept_strings and b in kept_strings
    most_used = int(np.argmax(np.where(np.isin(np.arange(len(counts)), sorted(alphabet)), 0, counts)))
    assert most_used in keep


def test_text_made_of_kept_tokens_tokenizes_exactly_as_before_and_other_text_still_round_trips(
        tokenizer, tokenizer_json):
    keep = choose_tokens(tokenizer_json, counts_of(tokenizer, TEXT), 400)
    pruned = Tokenizer.from_str(json.dumps(prune_tokenizer_json(tokenizer_json, keep)))
    assert pruned.get_vocab_size() == len(keep)
    assert pruned.encode(TEXT).ids == [keep.index(i) for i in tokenizer(TEXT)["input_ids"]]
    other = "class Queue:\n    '''A heap of scheduled events.'''\n"
    dropped = [i for i in tokenizer(other)["input_ids"] if i not in keep]
    assert dropped, "the second text should need a pruned token"
    ids = pruned.encode(other).ids
    assert len(ids) > len(tokenizer(other)["input_ids"])
    assert pruned.decode(ids) == other


def test_prune_vocab_writes_the_teacher_restricted_to_the_kept_tokens(arch, tiny_dirs, corpus_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    s = run_json(capsys, "prune-vocab", str(tiny_dirs[arch]), "--data", str(corpus_dir), "--vocab-size", "500",
                 "--out", str(out), "--decontaminate", "none", "--json")
    assert s["kept"] <= 500 and s["vocab_size"] == 1024 and 0.5 < s["coverage"] < 1
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == s["kept"] and config["bos_token_id"] == 0

    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    student = AutoModelForCausalLM.from_pretrained(out).eval()
    pruned_vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    old_vocab = json.loads((tiny_dirs[arch] / "tokenizer.json").read_text())["model"]["vocab"]
    keep = [old_vocab[t] for t, _ in sorted(pruned_vocab.items(), key=lambda kv: kv[1])]
    new_ids = Tokenizer.from_file(str(out / "tokenizer.json")).encode(TEXT).ids
    old_ids = [keep[i] for i in new_ids]
    with torch.no_grad():
        old = teacher(torch.tensor([old_ids])).logits[0][:, keep]
        new = student(torch.tensor([new_ids])).logits[0]
    torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-4)

    rt = load_runtime(str(out))  # the inference side takes it like any model
    assert rt.vocab_size == s["kept"]
    assert Completer(rt).complete("import os\n\n\ndef main(", max_new_tokens=4).text is not None


@pytest.mark.parametrize("size, error", [("2000", "has 1024 tokens already"), ("100", "the byte alphabet")])
def test_prune_vocab_refuses_sizes_it_cannot_honour_with_one_line(tiny_dirs, corpus_dir, tmp_path, capsys, size, error):
    code, _, err = run(capsys, "prune-vocab", str(tiny_dirs["gpt2"]), "--data", str(corpus_dir), "--vocab-size", size,
                       "--out", str(tmp_path / "out"), "--decontaminate", "none")
    assert code != 0 and error in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_prune_vocab_refuses_an_existing_out_directory(tiny_dirs, corpus_dir, tmp_path, capsys):
    code, _, err = run(capsys, "prune-vocab", str(tiny_dirs["gpt2"]), "--data", str(corpus_dir), "--vocab-size", "500",
                       "--out", str(tmp_path), "--decontaminate", "none")
    assert code != 0 and "already exists" in err


def test_a_pruned_teacher_compresses_to_a_student_that_runs_and_never_reuses_a_cache_of_other_tokens(
        tiny_dirs, corpus_dir, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    kept = run_json(capsys, "prune-vocab", str(tiny_dirs["llama"]), "--data", str(corpus_dir), "--vocab-size", "500",
                    "--out", str(pruned), "--json")["kept"]
    common = ["--method", "quant", "--weight-format", "int3", "--group-size", "16", "--embed-bits", "4",
              "--data", str(corpus_dir), "--steps", "3", "--seq-len", "32", "--batch-size", "2",
              "--cache-tokens", "4096", "--cache-dir", str(tmp_path / "cache"), "--json"]
    run_json(capsys, "compress", "--teacher", str(tiny_dirs["llama"]), "--out", str(tmp_path / "full"), *common)
    code, _, err = run(capsys, "compress", "--teacher", str(pruned), "--out", str(tmp_path / "mixed"), *common)
    assert code != 0 and "other token windows" in err and len(err.strip().splitlines()) == 1

    common[common.index("--cache-dir") + 1] = str(tmp_path / "pruned-cache")
    run_json(capsys, "compress", "--teacher", str(pruned), "--out", str(tmp_path / "student"), *common)
    rt = load_runtime(str(tmp_path / "student"))
    assert rt.vocab_size == kept
    assert Completer(rt).complete("import os\n\n\ndef main(", max_new_tokens=4).text is not None
