"""The completion function shared by eval, bench and the server.

Most tests use an "oracle" runtime that knows the file being typed: its logits always favour
the longest vocabulary entry that continues the file. That isolates the completion logic (prompt,
token healing, stopping, trimming) from model quality.
"""

from __future__ import annotations

import numpy as np
from transformers import AutoModelForCausalLM

from xtc.infer.complete import Completer
from xtc.infer.runtime import KVCache, Runtime

FILE = "def hello_world(name):\n    greeting = 'hello ' + name\n    return greeting\n\n\nprint(hello_world('x'))\n"


class OracleRuntime:
    """Stands in for `Runtime`: predicts the continuation of `target` (or `fallback` text)."""

    def __init__(self, tokenizer, target: str, prefer: str | None = None):
        self.tokenizer, self.target, self.prefer = tokenizer, target, prefer
        self.vocab_size, self.max_context = len(tokenizer), 512
        self.cache = KVCache([], [])
        self.texts = [tokenizer.decode([i]) for i in range(self.vocab_size)]

    def _logits(self) -> np.ndarray:
        text = self.tokenizer.decode(self.cache.tokens)
        logits = np.zeros(self.vocab_size, dtype=np.float32)
        if self.prefer is not None:  # a model with a fixed habit, e.g. always ending the line
            logits[[i for i, t in enumerate(self.texts) if t == self.prefer]] = 10
            return logits
        rest = self.target[len(text):] if self.target.startswith(text) else ""
        best = max((i for i, t in enumerate(self.texts) if t and rest.startswith(t)),
                   key=lambda i: len(self.texts[i]), default=None)
        if best is not None:
            logits[best] = 10
        return logits

    def prefill(self, ids):
        self.cache.tokens = list(ids)
        return self._logits()

    def step(self, token):
        self.cache.tokens.append(token)
        return self._logits()


def cut(marker: str) -> str:
    return FILE[:FILE.index(marker) + len(marker)]


def test_completes_the_rest_of_the_line(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    assert completer.complete(cut("greeting = ")).text == "'hello ' + name"


def test_cursor_inside_a_word_is_healed(tokenizer):
    # "hello_wo" tokenizes differently from "hello_world": the last token is redone by the model
    completer = Completer(OracleRuntime(tokenizer, FILE))
    assert completer.complete(cut("def hello_wo")).text == "rld(name):"
    assert completer.complete(cut("    gree")).text == "ting = 'hello ' + name"


def test_fresh_indented_line_gets_code_not_a_line_end(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    assert completer.complete(cut("name\n    ")).text == "return greeting"
    # a model that always wants to end the line is stopped from doing so on a blank line
    stubborn = Completer(OracleRuntime(tokenizer, FILE, prefer="\n"))
    text = stubborn.complete(cut("name\n    ")).text
    assert text and "\n" not in text


def test_whitespace_only_suggestions_are_dropped(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, "x = 1      \ny = 2\n"))
    assert completer.complete("x = 1").text == ""


def test_multiline_stops_at_the_end_of_the_block(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    text = completer.complete(cut("(name):\n"), multiline=True, max_new_tokens=64).text
    assert text == "    greeting = 'hello ' + name\n    return greeting"


def test_max_new_tokens_bounds_the_work(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    result = completer.complete(cut("(name):\n"), multiline=True, max_new_tokens=3)
    assert result.new_tokens <= 4  # 3 plus at most one healed token


def test_text_already_after_the_cursor_is_not_repeated(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    assert completer.complete(cut("print(hello_world("), after="))\n").text == "'x'"


def test_cancellation_between_tokens(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    result = completer.complete(cut("greeting = "), should_stop=lambda: True)
    assert result.cancelled and result.text == ""


def test_empty_document_gives_nothing(tokenizer):
    assert Completer(OracleRuntime(tokenizer, FILE)).complete("   \n").text == ""


def test_typing_one_character_reuses_the_cached_prompt(tiny_dirs):
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    completer = Completer(Runtime(model, AutoTokenizer.from_pretrained(tiny_dirs["llama"])))
    prompt = (FILE * 6)[:700]
    cold = completer.complete(prompt)
    warm = completer.complete(prompt + "x")
    assert cold.reused_tokens == 0
    assert warm.reused_tokens >= warm.prompt_tokens - 4


def test_generation_longer_than_the_context_is_capped_not_an_error(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, FILE))
    result = completer.complete(cut("(name):\n"), multiline=True, max_new_tokens=10_000)
    assert result.text.startswith("    greeting")
