"""The one function that turns code around the cursor into a suggestion.

`xtc eval` and the language server both call `Completer.complete`, so the quality benchmark
measures exactly what users get (`xtc bench` times the runtime's prefill and greedy decoding
directly, without these rules, so that its numbers compare across engines). It handles the
details that make or break inline completion:
- a stable prompt window, so that typing one more character re-uses the KV cache;
- the file's name for a model trained with it (`header`): SmolLM2's vocabulary has StarCoder's
  `<filename>` token, and a `<filename>NAME` line before the code lowers its loss on non-Python
  files (measured: docs/editors.md); Python files keep the raw text, exactly what `xtc eval`
  measures;
- token healing: the cursor often sits mid-token or after fresh indentation that the tokenizer
  would merge with the next word (SmolLM2 tokenizes "\\n    return" as "\\n   ", " return"). We back
  off the trailing tokens and require the generation to reproduce the removed bytes (in bytes, not
  characters: a byte-level BPE model writes a CJK character or an emoji as several byte tokens);
- decoding exactly as the model wrote it (never `clean_up_tokenization_spaces`);
- a cursor on a blank or freshly indented line must not be "completed" with a newline;
- stop at the end of the line, or with `multiline` at the end of the block (`rules.block_end`);
- code from other files of the workspace ahead of the current one (`xtc.infer.context`), and
  after `module.` only a name that workspace module defines (`Context.members`);
- fill-in-the-middle for a vocabulary that has FIM tokens: the model sees the text after the cursor;
- never suggest only whitespace, nor what the line already has after the cursor (`rules`).
"""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from xtc.core import defaults
from xtc.infer import rules
from xtc.infer.context.workspace import Context
from xtc.infer.runtime import Runtime
from xtc.infer.tokenizer import decode_exact

MAX_HEAL_TOKENS = 3
FILENAME_TOKEN = "<filename>"  # StarCoder's file-name marker, in SmolLM2's vocabulary
PYTHON_SUFFIXES = (".py", ".pyi", ".pyw")
_LINE_END = re.compile(r"\r\n|\r|\n")  # LSP's line ends
_NAME_AT_END = re.compile(r"\.\s*(\w*)$")  # the cursor right after `base.` or inside `base.name`
_BASE_AT_END = re.compile(r"[A-Za-z_]\w*$")  # the cursor right after `base`: a `.` may come next
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte pieces
#: Fill-in-the-middle tokens (prefix, suffix, middle) of StarCoder, Qwen2.5-Coder and CodeLlama,
#: and the tokens that end a middle.
FIM_TOKENS = (("<fim_prefix>", "<fim_suffix>", "<fim_middle>"), ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
              ("<PRE>", "<SUF>", "<MID>"), ("▁<PRE>", "▁<SUF>", "▁<MID>"))
FIM_STOPS = ("<fim_pad>", "<|fim_pad|>", "<file_sep>", "<|file_sep|>", "<EOT>", "▁<EOT>", "<|endoftext|>")
NOT_A_BYTE = 0xFFFF  # a character latin-1 cannot encode (a Unicode noncharacter)
FIM_SUFFIX_SHARE = 4  # the text after the cursor gets up to a quarter of the prompt (Continue gives 20%)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    reused_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    replace: int = 0  # characters after the cursor, on its line, that `text` replaces
    mean_logprob: float = 0.0  # the model's mean log-probability of the tokens it wrote
    hidden: str = ""  # why a suggestion was withheld (a `rules` name), "" when shown
    steered: bool = False  # a member name of `Context.members` replaced the model's first choice


class Cancelled(Exception):
    pass


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: byte -> printable character (as in GPT-2's tokenizer;
    defined here because transformers 5 no longer exports it, and importing transformers costs
    memory a process that does not otherwise need it would hold: docs/speed.md)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def _byte_level_table() -> dict[int, int]:
    """A `str.translate` table from byte-level BPE characters to the bytes they stand for (as code
    points below 256); any other character below 256 goes to one above, so that encoding a piece
    as latin-1 fails exactly when the piece is not all byte-level characters."""
    table = dict.fromkeys(range(256), NOT_A_BYTE)
    table.update((ord(c), b) for b, c in _bytes_to_unicode().items())
    return table


def _token_texts(tokenizer) -> tuple[list[str], list[bytes], set[int]]:
    """The text and the bytes of every vocabulary entry, and the ids of special tokens (empty).
    A byte-level BPE piece (GPT-2, SmolLM2) or a byte-fallback piece (`<0xE4>`) may be part of a
    character: its bytes are exact, its text is what of it decodes alone (often nothing)."""
    vocab_size = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i in getattr(tokenizer, "added_tokens_decoder", {}) if tokenizer.added_tokens_decoder[i].special}
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    byte_level = _bytes_to_unicode()[ord(" ")] in pieces  # "Ġ": every byte-level vocabulary has all 256 bytes
    table = _byte_level_table()
    texts, data = [""] * vocab_size, [b""] * vocab_size
    for i, piece in enumerate(pieces):  # once per start: kept to cheap string methods (C loops)
        if piece is None or i in special:
            continue
        raw = None
        if byte_level:
            try:
                raw = piece.translate(table).encode("latin-1")
            except UnicodeEncodeError:  # not all byte-level characters
                pass
        else:
            fallback = _BYTE_FALLBACK.fullmatch(piece)
            if fallback:
                raw = bytes([int(fallback.group(1), 16)])
        if raw is None:
            text = decode_exact(tokenizer, [i])
            texts[i], data[i] = text, text.encode("utf-8")
        else:
            texts[i], data[i] = raw.decode("utf-8", errors="ignore"), raw
    return texts, data, special


class Completer:
    """Completion over one runtime; holds the vocabulary tables it needs for constrained decoding."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.tokenizer = runtime.tokenizer
        self.texts, self.bytes, special = _token_texts(self.tokenizer)
        n = runtime.vocab_size
        self.eos_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
                        if isinstance(i, int) and 0 <= i < n}
        self.banned = np.zeros(n, dtype=bool)  # special tokens that are not an end of text
        for i in special - self.eos_ids:
            if i < n:
                self.banned[i] = True
        self.banned[len(self.texts):] = True  # padded vocabulary rows
        # Vocabulary sorted by bytes: the tokens extending a byte string are one contiguous range
        # (a stable sort of the ids: equal bytes stay in id order).
        data = self.bytes[:n]
        order = sorted(filter(data.__getitem__, range(len(data))), key=data.__getitem__)
        self.sorted_bytes = [data[i] for i in order]
        self.sorted_ids = np.array(order, dtype=np.int64)
        self.ids_by_bytes: dict[bytes, list[int]] = {}
        for i in order:
            self.ids_by_bytes.setdefault(data[i], []).append(i)
        # Tokens that end a line before writing anything (for blank / freshly indented lines).
        self.blank_newline = np.zeros(n, dtype=bool)
        self.blank_newline[[i for i, text in enumerate(self.texts[:n])
                            if "\n" in text and not text.split("\n", 1)[0].strip()]] = True
        marker = self.tokenizer(FILENAME_TOKEN, add_special_tokens=False)["input_ids"]
        self.filename_marker = len(marker) == 1 and marker[0] in special  # one special token, not its spelling
        self._headers: dict[tuple[str, str], list[int]] = {}
        self.fim = self._fim_ids()
        self.fim_stops = {i for i in map(self._single_id, FIM_STOPS) if i is not None} if self.fim else set()
        self._context_ids: tuple[str, list[int]] = ("", [])
        # Tokens that start with a byte no identifier has: they end a name.
        # (An empty entry counts as "_": it ends nothing.)
        self.ends_name = np.zeros(n, dtype=bool)
        firsts = np.frombuffer(b"".join([b[:1] or b"_" for b in data]), dtype=np.uint8)
        self.ends_name[:len(data)] = ~_IDENTIFIER_BYTES[firsts]

    def _single_id(self, token: str) -> int | None:
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 and ids[0] < self.rt.vocab_size and not self.texts[ids[0]] else None

    def _fim_ids(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) token ids when the vocabulary has a FIM triple as special tokens."""
        for names in FIM_TOKENS:
            ids = tuple(self._single_id(name) for name in names)
            if None not in ids:
                return ids
        return None

    # -- prompt ---------------------------------------------------------------------------------
    def header(self, filename: str = "", language: str = "") -> str:
        """What the model sees before the document: `<filename>NAME` and a newline, as code was
        laid out in its training data, for a file that is not Python when the model's vocabulary
        has the `<filename>` token (SmolLM2, StarCoder); otherwise nothing (a Python file, a
        document without a name, a model without the token such as GPT-2 or CodeGPT).
        `language`: the editor's language id."""
        name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
        if not name or not self.filename_marker or language.lower() == "python" or name.lower().endswith(PYTHON_SUFFIXES):
            return ""
        return f"{FILENAME_TOKEN}{name}\n"

    def _header_ids(self, filename: str, language: str) -> list[int]:
        key = (filename, language)
        if key not in self._headers:
            text = self.header(filename, language)
            self._headers[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return self._headers[key]

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

    def _ids_of_context(self, context: Context | None) -> list[int]:
        text = context.text if context is not None else ""
        if self._context_ids[0] != text:  # the block rarely changes: tokenize it once
            self._context_ids = (text, self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])
        return self._context_ids[1]

    def _prompt(self, before: str, after: str, context: Context | None, context_tokens: int, filename: str,
                language: str) -> tuple[list[int], list[int]]:
        """(ids, healed ids): the workspace block, the file's header and the text before the cursor
        (or the FIM form with the text after it), the last tokens backed off for healing."""
        block = self._ids_of_context(context)
        if len(block) > context_tokens // 2:  # the file itself keeps at least half of the room
            block = []
        room = context_tokens - len(block)
        header = [] if block and context.names_file else self._header_ids(filename, language)
        if len(header) > room // 4:  # a name too long to be worth its room
            header = []
        room -= len(header)
        if self.fim is not None and after.strip():
            prefix, suffix, middle = self.fim
            after_ids = self.tokenizer(after, add_special_tokens=False)["input_ids"][: room // FIM_SUFFIX_SHARE]
            before_ids = self.prompt_ids(before, room - len(after_ids) - 3)
            return block + header + [prefix] + before_ids + [suffix] + after_ids + [middle], []
        ids = block + header + self.prompt_ids(before, room)
        kept, healed = self._split_heal(ids)
        return kept, healed

    # -- decoding -------------------------------------------------------------------------------
    def complete(self, before: str, after: str = "", *, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
                 context_tokens: int = defaults.CONTEXT_TOKENS, multiline: bool = defaults.MULTILINE,
                 should_stop: Callable[[], bool] | None = None, filename: str = "", language: str = "",
                 context: Context | None = None, min_mean_logprob: float | None = None) -> Completion:
        """The suggestion at the cursor (`before` / `after`: the document's text around it).
        `filename` and `language` (the editor's language id) say what file it is (see `header`);
        `context`: the workspace block placed ahead of the file (`xtc.infer.context`);
        `min_mean_logprob`: withhold a suggestion the model is less sure of (`rules.unsure`) or
        that repeats itself (`rules.repeats_itself`); None shows them (what `xtc eval` scores)."""
        started = time.perf_counter()
        if not before.strip():
            return Completion("", seconds=time.perf_counter() - started)
        max_new_tokens = max(1, min(max_new_tokens, self.rt.max_context // 2))  # prompt + generation must fit
        context_tokens = max(8, min(context_tokens + len(self._ids_of_context(context)),
                                    self.rt.max_context - max_new_tokens - MAX_HEAL_TOKENS - 1))
        prompt_ids, heal_ids = self._prompt(before, after, context, context_tokens, filename, language)
        heal, heal_bytes = decode_exact(self.tokenizer, heal_ids), b"".join(self.bytes[i] for i in heal_ids)
        line_so_far = before.rsplit("\n", 1)[-1]
        fresh_line = not line_so_far.strip()
        lines_before = before.split("\n")
        in_body = fresh_line and len(lines_before) > 1 and rules.opens_block(
            next((line for line in reversed(lines_before[:-1]) if line.strip()), ""))
        stops = self.eos_ids | (self.fim_stops if prompt_ids and self.fim and prompt_ids[-1] == self.fim[2] else set())
        members = context.members if context is not None else None
        logprob, steered = 0.0, False
        try:
            cached_before = self.rt.cache.tokens[:]
            logits = self._check(self.rt.prefill(prompt_ids), should_stop)
            reused = _common_prefix(cached_before, prompt_ids)
            generated: list[int] = []
            text, written = "", b""  # what the generated tokens decode to, and their bytes
            for _ in range(max_new_tokens + len(heal_ids)):
                completion = text[len(heal):] if len(written) >= len(heal_bytes) else ""
                names = _member_constraint(members, line_so_far, completion, heal_bytes[len(written):]) \
                    if members else None
                token, allowed = self._choose(logits, heal_bytes, written, completion, fresh_line, names)
                if token is None or token in stops:
                    break
                steered |= allowed is not None and token != self._choose(logits, heal_bytes, written, completion,
                                                                         fresh_line)[0]
                # A steered name is scored among the names allowed, so `unsure` judges the model's
                # choice between real names, not its wish for a made-up one.
                logprob += _log_softmax_at(logits if allowed is None else allowed, token)
                generated.append(token)
                written += self.bytes[token] if token < len(self.bytes) else b""
                text = decode_exact(self.tokenizer, generated)
                if len(written) > len(heal_bytes) and self._finished(text[len(heal):], multiline, line_so_far, in_body):
                    break
                if len(generated) >= max_new_tokens + len(heal_ids):  # the healed tokens come on top
                    break
                logits = self._check(self.rt.step(token), should_stop)
        except Cancelled:
            return Completion("", cancelled=True, seconds=time.perf_counter() - started)
        text = _without_partial_character(text, written)
        raw = text[len(heal):] if written.startswith(heal_bytes) and text.startswith(heal) else ""
        suggestion, replace = self._trim(raw, after, multiline, line_so_far, in_body)
        mean = logprob / len(generated) if generated else 0.0
        hidden = ""
        if suggestion and rules.repeats_next_line(line_so_far, suggestion, after):
            hidden = "repeats_next_line"
        elif suggestion and min_mean_logprob is not None and rules.repeats_itself(suggestion):
            hidden = "repeats_itself"
        elif suggestion and rules.unsure(mean, min_mean_logprob):
            hidden = "unsure"
        if hidden:
            suggestion, replace = "", 0
        return Completion(suggestion, len(prompt_ids) + len(heal_ids), reused, len(generated),
                          time.perf_counter() - started, replace=replace, mean_logprob=mean, hidden=hidden,
                          steered=steered)

    def _split_heal(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """(kept, healed): drop the last token, and whitespace-only tokens (or byte pieces) before
        it, for the model to redo; the dropped bytes must then come back as the start of the
        generation. The healed tokens start on a character: never inside a multi-byte one."""
        kept = list(ids)
        while len(kept) > 1 and len(ids) - len(kept) < MAX_HEAL_TOKENS:
            text = self.texts[kept[-1]] if kept[-1] < len(self.texts) else ""
            if len(kept) < len(ids) and text.strip():
                break
            kept.pop()
            if text.strip():  # a word-like token is healed alone
                break
        while len(kept) > 1 and len(kept) < len(ids) and self._continues_a_character(ids[len(kept)]):
            kept.pop()
        return kept, ids[len(kept):]

    def _continues_a_character(self, token: int) -> bool:
        """Whether the token's bytes start inside a UTF-8 character (a continuation byte)."""
        data = self.bytes[token] if token < len(self.bytes) else b""
        return bool(data) and data[0] & 0xC0 == 0x80

    @staticmethod
    def _check(logits: np.ndarray, should_stop: Callable[[], bool] | None) -> np.ndarray:
        if should_stop is not None and should_stop():
            raise Cancelled()
        return logits

    def _choose(self, logits: np.ndarray, heal: bytes, written: bytes, completion: str, fresh_line: bool,
                names: tuple[frozenset[str], str, bytes, bool] | None = None) -> tuple[int | None, np.ndarray | None]:
        """The next token: greedy, within the healing constraint while the healed bytes are not all
        written yet (`written`: the bytes generated so far; `completion`: the text after them), and
        with `names` (`_member_constraint`) only tokens that keep writing one of the names. Also
        returns the logits the choice was made among when the names constrained it (else None)."""
        logits = np.array(logits, dtype=np.float32)  # a copy; also accepts a torch tensor
        logits[self.banned] = float("-inf")
        if len(written) < len(heal):  # still reproducing the healed bytes
            allowed = self._consistent_with(heal[len(written):], len(logits))
            logits[~allowed] = float("-inf")
        elif fresh_line and not completion.strip():
            # A blank or freshly indented line: the user wants code here, not the end of the line.
            logits[self.blank_newline] = float("-inf")
            for i in self.eos_ids:
                logits[i] = float("-inf")
        if np.isinf(logits).all():
            return None, None
        if names is not None:
            keep = self._name_tokens(*names, len(logits))
            if keep is not None and not np.isinf(logits[keep]).all():
                logits[~keep] = float("-inf")
                return int(np.argmax(logits)), logits
        return int(np.argmax(logits)), None

    def _name_tokens(self, members: frozenset[str], typed: str, lead: bytes, others_free: bool,
                     n: int) -> np.ndarray | None:
        """Tokens that write `lead` (healed bytes, maybe a `.`) and then keep `typed` on the way to
        one of the member names, or finish one and go on with a byte no name has (`(`, a space);
        with `others_free` also every token that does not write all of `lead`. None when no member
        starts with `typed` (the user writes a name we do not know: no constraint)."""
        typed_bytes = typed.encode("utf-8")
        allowed = np.zeros(n, dtype=bool)
        known = False
        for name in members:
            whole = name.encode("utf-8")
            if not whole.startswith(typed_bytes):
                continue
            known = True
            rest = whole[len(typed_bytes):]
            for end in range(1, len(rest) + 1):  # on the way to the name
                allowed[[i for i in self.ids_by_bytes.get(lead + rest[:end], ()) if i < n]] = True
            full = lead + rest
            if not full:
                allowed |= self.ends_name[:n]
                continue
            lo = bisect.bisect_left(self.sorted_bytes, full)
            bound = _after_prefix(full)
            hi = len(self.sorted_bytes) if bound is None else bisect.bisect_left(self.sorted_bytes, bound, lo)
            for j in range(lo, hi):  # the name and then something that ends it
                data = self.sorted_bytes[j]
                if len(data) > len(full) and not _identifier_byte(data[len(full)]) and self.sorted_ids[j] < n:
                    allowed[self.sorted_ids[j]] = True
        if not known:
            return None
        for end in range(1, len(lead) + 1):  # healed bytes alone: nothing of the name yet
            allowed[[i for i in self.ids_by_bytes.get(lead[:end], ()) if i < n]] = True
        if others_free:
            lo = bisect.bisect_left(self.sorted_bytes, lead)
            bound = _after_prefix(lead)
            hi = len(self.sorted_bytes) if bound is None else bisect.bisect_left(self.sorted_bytes, bound, lo)
            free = np.ones(n, dtype=bool)
            free[[i for i in self.sorted_ids[lo:hi] if i < n]] = False
            allowed |= free
        return allowed

    def _consistent_with(self, remaining: bytes, n: int) -> np.ndarray:
        """Tokens whose bytes either start with `remaining` or are a prefix of it (byte pieces of
        a multi-byte character included)."""
        allowed = np.zeros(n, dtype=bool)
        lo = bisect.bisect_left(self.sorted_bytes, remaining)
        end = _after_prefix(remaining)
        hi = len(self.sorted_bytes) if end is None else bisect.bisect_left(self.sorted_bytes, end, lo)
        allowed[self.sorted_ids[lo:hi]] = True
        for end in range(1, len(remaining)):
            for i in self.ids_by_bytes.get(remaining[:end], ()):
                allowed[i] = True
        return allowed

    @staticmethod
    def _finished(completion: str, multiline: bool, line_so_far: str = "", in_body: bool = False) -> bool:
        if not multiline:
            return "\n" in completion
        return rules.block_end(line_so_far, completion, in_body) is not None

    @staticmethod
    def _trim(completion: str, after: str, multiline: bool, line_so_far: str = "",
              in_body: bool = False) -> tuple[str, int]:
        """(text, replaced characters after the cursor): one line, or the block with `multiline`,
        without what the line already has after the cursor."""
        if multiline:
            end = rules.block_end(line_so_far, completion, in_body)
            completion = completion if end is None else completion[:end]
        else:
            completion = completion.split("\n", 1)[0]
        completion = completion.rstrip()
        if not completion.strip():
            return "", 0
        if "\n" in completion:  # the rest of the cursor's line moves to the end of the suggestion's last line
            return completion, 0
        completion, replace = rules.trim_rest_of_line_overlap(completion, _LINE_END.split(after, maxsplit=1)[0])
        return (completion, replace) if completion.strip() else ("", 0)


def _after_prefix(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


def _without_partial_character(text: str, data: bytes) -> str:
    """`text` (the decoding of `data`) without the replacement character that an unfinished
    multi-byte character at the end of `data` decodes to (generation stopped inside it)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data":
            return text.rstrip("\ufffd")
    return text


def _log_softmax_at(logits, token: int) -> float:
    """log p(token) under the distribution `logits` give (-inf: tokens left out)."""
    values = np.asarray(logits, dtype=np.float32)
    top = float(values.max())
    return float(values[token]) - top - float(np.log(np.exp(values - top).sum()))


def _member_constraint(members: frozenset[str], line_so_far: str, completion: str,
                       heal: bytes) -> tuple[frozenset[str], str, bytes, bool] | None:
    """(names, the name typed so far, bytes to write before it, whether other tokens are free)
    while the cursor plus what was written is inside `base.name` or right after `base` (where
    only a `.` must go on with a member name); None once the name is done. `heal`: the healed
    bytes still to write."""
    typed = _NAME_AT_END.search(line_so_far)
    if typed is not None:
        return (members, typed.group(1) + completion, heal, False) if _is_name(completion) else None
    if not _BASE_AT_END.search(line_so_far):
        return None
    if not completion:
        return members, "", heal + b".", True
    if completion.startswith(".") and _is_name(completion[1:]):
        return members, completion[1:], b"", False
    return None


def _identifier_byte(byte: int) -> bool:
    """Whether a byte can be part of a Python identifier (non-ASCII bytes may be)."""
    return byte >= 0x80 or chr(byte).isalnum() or byte == ord("_")


_IDENTIFIER_BYTES = np.array([_identifier_byte(b) for b in range(256)], dtype=bool)


def _is_name(text: str) -> bool:
    """Whether `text` is empty or could be the start of an identifier's rest."""
    return not text or ("x" + text).isidentifier()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return min(n, max(0, len(b) - 1))
