"""The one function that turns code around the cursor into a suggestion.

`xtc eval`, `xtc bench` and the language server all call `Completer.complete`, so the benchmark
measures exactly what users get. It handles the details that make or break inline completion:
- a stable prompt window, so that typing one more character re-uses the KV cache;
- token healing: the cursor often sits mid-token or after fresh indentation that the tokenizer
  would merge with the next word (SmolLM2 tokenizes "\\n    return" as "\\n   ", " return"). We back
  off the trailing tokens and require the generation to reproduce the removed text;
- a cursor on a blank or freshly indented line must not be "completed" with a newline;
- stop at the end of the line (Automatic) or at the end of the block (multi-line, Invoked);
- never suggest only whitespace.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from xtc.core import defaults
from xtc.infer.runtime import Runtime

MAX_HEAL_TOKENS = 3


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    reused_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    cancelled: bool = False


class Cancelled(Exception):
    pass


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: byte -> printable character (as in GPT-2's tokenizer;
    defined here because transformers 5 no longer exports it, and importing transformers costs
    ~50 MB of memory in a process that does not otherwise need it)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def _token_texts(tokenizer) -> tuple[list[str], set[int]]:
    """The text of every vocabulary entry, and the ids of special tokens."""
    vocab_size = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i in getattr(tokenizer, "added_tokens_decoder", {}) if tokenizer.added_tokens_decoder[i].special}
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    texts = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            texts.append("")
        elif byte_of and all(c in byte_of for c in piece):  # byte-level BPE (GPT-2, SmolLM2)
            texts.append(bytes(byte_of[c] for c in piece).decode("utf-8", errors="ignore"))
        else:
            texts.append(tokenizer.decode([i]))
    return texts, special


class Completer:
    """Completion over one runtime; holds the vocabulary tables it needs for constrained decoding."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.tokenizer = runtime.tokenizer
        self.texts, special = _token_texts(self.tokenizer)
        n = runtime.vocab_size
        self.eos_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
                        if isinstance(i, int) and 0 <= i < n}
        self.banned = np.zeros(n, dtype=bool)  # special tokens that are not an end of text
        for i in special - self.eos_ids:
            if i < n:
                self.banned[i] = True
        for i in range(len(self.texts), n):  # padded vocabulary rows
            self.banned[i] = True
        # Vocabulary sorted by text: the tokens extending a string are one contiguous range.
        order = sorted((t, i) for i, t in enumerate(self.texts[:n]) if t)
        self.sorted_texts = [t for t, _ in order]
        self.sorted_ids = np.array([i for _, i in order], dtype=np.int64)
        self.ids_by_text: dict[str, list[int]] = {}
        for t, i in order:
            self.ids_by_text.setdefault(t, []).append(i)
        # Tokens that end a line before writing anything (for blank / freshly indented lines).
        self.blank_newline = np.zeros(n, dtype=bool)
        for i, text in enumerate(self.texts[:n]):
            if "\n" in text and not text.split("\n", 1)[0].strip():
                self.blank_newline[i] = True

    # -- prompt ---------------------------------------------------------------------------------
    def prompt_ids(self, before: str, context_tokens: int) -> list[int]:
        """Tokens of the text before the cursor, windowed so the start moves rarely."""
        budget = context_tokens * 4
        start = 0
        if len(before) > budget:
            chunk = max(1, budget // 4)
            start = ((len(before) - budget) // chunk + 1) * chunk  # moves once per `chunk` chars typed
            newline = before.find("\n", start)
            start = newline + 1 if newline != -1 else start
        ids = self.tokenizer(before[start:], add_special_tokens=False)["input_ids"]
        if len(ids) > context_tokens:
            chunk = max(1, context_tokens // 4)
            excess = len(ids) - context_tokens
            ids = ids[-(-excess // chunk) * chunk:]
        return ids

    # -- decoding -------------------------------------------------------------------------------
    def complete(self, before: str, after: str = "", *, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
                 context_tokens: int = defaults.CONTEXT_TOKENS, multiline: bool = defaults.MULTILINE,
                 should_stop: Callable[[], bool] | None = None) -> Completion:
        started = time.perf_counter()
        if not before.strip():
            return Completion("", seconds=time.perf_counter() - started)
        max_new_tokens = max(1, min(max_new_tokens, self.rt.max_context // 2))  # prompt + generation must fit
        context_tokens = max(8, min(context_tokens, self.rt.max_context - max_new_tokens - MAX_HEAL_TOKENS - 1))
        ids = self.prompt_ids(before, context_tokens)
        prompt_ids, heal = self._split_heal(ids)
        line_so_far = before.rsplit("\n", 1)[-1]
        fresh_line = not line_so_far.strip()
        try:
            cached_before = self.rt.cache.tokens[:]
            logits = self._check(self.rt.prefill(prompt_ids), should_stop)
            reused = _common_prefix(cached_before, prompt_ids)
            generated: list[int] = []
            text = ""
            for _ in range(max_new_tokens + MAX_HEAL_TOKENS):
                token = self._choose(logits, heal, text, fresh_line)
                if token is None or token in self.eos_ids:
                    break
                generated.append(token)
                text = self.tokenizer.decode(generated)
                if len(text) > len(heal) and self._finished(text[len(heal):], multiline):
                    break
                if len(generated) >= max_new_tokens + (1 if heal else 0):
                    break
                logits = self._check(self.rt.step(token), should_stop)
        except Cancelled:
            return Completion("", cancelled=True, seconds=time.perf_counter() - started)
        suggestion = self._trim(text[len(heal):] if text.startswith(heal) else "", after, multiline)
        return Completion(suggestion, len(ids), reused, len(generated), time.perf_counter() - started)

    def _split_heal(self, ids: list[int]) -> tuple[list[int], str]:
        """Drop the last token, and whitespace-only tokens before it, for the model to redo; the
        dropped text must then come back as the start of the generation."""
        kept = list(ids)
        while len(kept) > 1 and len(ids) - len(kept) < MAX_HEAL_TOKENS:
            text = self.texts[kept[-1]] if kept[-1] < len(self.texts) else ""
            if len(kept) < len(ids) and text.strip():
                break
            kept.pop()
            if text.strip():  # a word-like token is healed alone
                break
        return kept, self.tokenizer.decode(ids[len(kept):])

    @staticmethod
    def _check(logits: np.ndarray, should_stop: Callable[[], bool] | None) -> np.ndarray:
        if should_stop is not None and should_stop():
            raise Cancelled()
        return logits

    def _choose(self, logits: np.ndarray, heal: str, text: str, fresh_line: bool) -> int | None:
        logits = np.array(logits, dtype=np.float32)  # a copy; also accepts a torch tensor
        logits[self.banned] = float("-inf")
        if len(text) < len(heal):  # still reproducing the healed text
            allowed = self._consistent_with(heal[len(text):], len(logits))
            logits[~allowed] = float("-inf")
        elif fresh_line and not text[len(heal):].strip():
            # A blank or freshly indented line: the user wants code here, not the end of the line.
            logits[self.blank_newline] = float("-inf")
            for i in self.eos_ids:
                logits[i] = float("-inf")
        if np.isinf(logits).all():
            return None
        return int(np.argmax(logits))

    def _consistent_with(self, remaining: str, n: int) -> np.ndarray:
        """Tokens that either start with `remaining` or are a prefix of it."""
        allowed = np.zeros(n, dtype=bool)
        lo = bisect.bisect_left(self.sorted_texts, remaining)
        hi = bisect.bisect_left(self.sorted_texts, remaining + "\U0010ffff")
        allowed[self.sorted_ids[lo:hi]] = True
        for end in range(1, len(remaining)):
            for i in self.ids_by_text.get(remaining[:end], ()):
                allowed[i] = True
        return allowed

    @staticmethod
    def _finished(completion: str, multiline: bool) -> bool:
        if not multiline:
            return "\n" in completion
        content = completion.lstrip("\n")
        return "\n\n" in content.rstrip(" ")

    @staticmethod
    def _trim(completion: str, after: str, multiline: bool) -> str:
        if multiline:
            content_start = len(completion) - len(completion.lstrip("\n"))
            end = completion.find("\n\n", content_start)
            completion = completion if end == -1 else completion[:end]
        else:
            completion = completion.split("\n", 1)[0]
        completion = completion.rstrip()
        rest_of_line = after.split("\n", 1)[0].strip()
        if rest_of_line and completion.endswith(rest_of_line):  # e.g. the closing bracket is already there
            completion = completion[: -len(rest_of_line)].rstrip()
        return completion if completion.strip() else ""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return min(n, max(0, len(b) - 1))
