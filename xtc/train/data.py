"""Training corpus: token blocks from directories of Python source files.

Files that hold an item of the evaluation benchmark are left out (`exclude`, see
`decontaminate.py`). The others are split into train and validation by a hash of their path
relative to their --data directory (so a file never lands in both, and a tree splits the same
wherever it lives), shuffled with a seed, tokenized with end-of-text separators, and
concatenated; batches are random windows of that stream.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.train.decontaminate import ItemKeys, benchmark_keys, split_contaminated

MAX_FILE_BYTES = 1_000_000  # generated tables and vendored blobs teach nothing about code


def python_files(dirs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise XtcError(f"--data {d}: not a directory")
        files.extend(p for p in d.rglob("*.py") if p.is_file() and 0 < p.stat().st_size <= MAX_FILE_BYTES)
    if not files:
        raise XtcError(f"no Python files under {', '.join(str(d) for d in dirs)}")
    return sorted(files)


def split_key(path: Path, roots: list[Path] = ()) -> str:
    """What the split hashes: the path relative to the first of `roots` (the --data directories)
    that holds it, e.g. "pkg/mod.py", so the same tree splits the same wherever it lives; the path
    as given when no root holds it."""
    absolute = os.path.abspath(path)
    for root in roots:
        relative = os.path.relpath(absolute, os.path.abspath(root))
        if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
            return Path(relative).as_posix()
    return str(path)


def is_validation(path: Path, fraction: float, roots: list[Path] = ()) -> bool:
    digest = hashlib.sha1(split_key(path, roots).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def split_files(files: list[Path], val_fraction: float = 0.05,
                roots: list[Path] = ()) -> tuple[list[Path], list[Path]]:
    """(train, validation) files; `roots`: the --data directories the files were found under."""
    held_out = {f for f in files if is_validation(f, val_fraction, roots)}
    train = [f for f in files if f not in held_out]
    val = [f for f in files if f in held_out]
    if not val and len(train) > 1:  # tiny corpora: still validate on held-out files
        val = [train.pop()]
    return train, val


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def tokenize_files(files: list[Path], tokenizer, max_tokens: int | None, seed: int, chunk: int = 64) -> torch.Tensor:
    """Shuffled files, tokenized in batches (fast tokenizers then use every core), end-of-text
    between files, stopping once `max_tokens` are collected."""
    files = list(files)
    random.Random(seed).shuffle(files)
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids: list[int] = []
    for i in range(0, len(files), chunk):
        texts = [t for t in map(_read, files[i:i + chunk]) if t]
        if not texts:
            continue
        for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids.extend(encoded)
            ids.append(sep)
        if max_tokens and len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens] if max_tokens else ids, dtype=torch.long)


@dataclass
class Corpus:
    train: torch.Tensor  # 1-D token stream
    val: torch.Tensor
    train_files: int
    val_files: int
    dropped_files: int = 0  # files left out because they hold a benchmark item
    excluded: str = ""  # the benchmark they were checked against; empty: not checked

    def describe(self) -> str:
        text = (f"{self.train_files} train files ({len(self.train):,} tokens), "
                f"{self.val_files} validation files ({len(self.val):,} tokens)")
        if self.excluded:
            text += f", {self.dropped_files} files dropped that hold items of {self.excluded}"
        return text


def build_corpus(dirs: list[Path], tokenizer, max_tokens: int | None = defaults.MAX_CORPUS_TOKENS,
                 val_fraction: float = 0.05, seed: int = defaults.SEED,
                 exclude: str | Path | list[dict] | ItemKeys | None = None) -> Corpus:
    """The corpus of the Python files under `dirs`. `exclude`: benchmark items (a JSON Lines file,
    a list of items or their keys); every file that holds one is dropped before the split."""
    files, dropped, keys = python_files(dirs), [], None
    if exclude is not None:
        keys = benchmark_keys(exclude)
        files, dropped = split_contaminated(files, keys)
        if not files:
            raise XtcError(f"every Python file under {', '.join(str(d) for d in dirs)} holds an item of {keys.source}")
    train_files, val_files = split_files(files, val_fraction, dirs)
    val_budget = None if max_tokens is None else max(4096, int(max_tokens * val_fraction))
    return Corpus(tokenize_files(train_files, tokenizer, max_tokens, seed),
                  tokenize_files(val_files, tokenizer, val_budget, seed), len(train_files), len(val_files),
                  len(dropped), keys.source if keys is not None else "")


def sample_batch(tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` random windows of `seq_len` tokens."""
    if len(tokens) <= seq_len:
        raise XtcError(f"corpus has {len(tokens)} tokens, fewer than --seq-len {seq_len}: add data or lower it")
    starts = torch.randint(0, len(tokens) - seq_len, (batch_size,), generator=generator)
    return torch.stack([tokens[s:s + seq_len] for s in starts.tolist()])


def eval_blocks(tokens: torch.Tensor, seq_len: int, max_blocks: int = 16) -> torch.Tensor:
    """Fixed, evenly spaced validation windows, so validation losses compare across steps."""
    n = min(max_blocks, max(1, (len(tokens) - 1) // seq_len))
    seq_len = min(seq_len, len(tokens) - 1)
    stride = max(1, (len(tokens) - seq_len) // n)
    return torch.stack([tokens[i * stride:i * stride + seq_len] for i in range(n)])
