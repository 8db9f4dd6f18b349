"""The completion function shared by eval, bench and the server.

Most tests use an "oracle" runtime that knows the file being typed: its logits always favour
the longest vocabulary entry that continues the file. That isolates the completion logic (prompt,
token healing, stopping, trimming) from model quality.
"""

from __future__ import annotations

import numpy as np
from transformers import AutoModelForCausalLM

from xtc.infer.complete import Completer, _bytes_to_unicode
from xtc.infer.runtime import KVCache, Runtime

FILE = "def hello_world(name):\n    greeting = 'hello ' + name\n    return greeting\n\n\nprint(hello_world('x'))\n"


class OracleRuntime:
    """Stands in for `Runtime`: predicts the continuation of `target` (or always `prefer`), byte by
    byte as a byte-level BPE model does (a character may take several tokens)."""

    def __init__(self, tokenizer, target: str, prefer: str | None = None):
        self.tokenizer, self.target, self.prefer = tokenizer, target.encode(), prefer
        self.vocab_size, self.max_context = len(tokenizer), 512
        self.cache = KVCache([], [])
        self.texts = [tokenizer.decode([i]) for i in range(self.vocab_size)]
        byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        special = set(tokenizer.all_special_ids)
        self.bytes = [b"" if i in special else bytes(byte_of[c] for c in tokenizer.convert_ids_to_tokens(i))
                      for i in range(self.vocab_size)]

    def _logits(self) -> np.ndarray:
        done = b"".join(self.bytes[i] for i in self.cache.tokens)
        logits = np.zeros(self.vocab_size, dtype=np.float32)
        if self.prefer is not None:  # a model with a fixed habit, e.g. always ending the line
            logits[[i for i, t in enumerate(self.texts) if t == self.prefer]] = 10
            return logits
        rest = self.target[len(done):] if self.target.startswith(done) else b""
        best = max((i for i, b in enumerate(self.bytes) if b and rest.startswith(b)),
                   key=lambda i: len(self.bytes[i]), default=None)
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


def test_healing_after_a_multibyte_character_offers_byte_tokens(tokenizer):
    # The tiny tokenizer has no merges for these characters: each is 3 or 4 byte tokens, and
    # healing backs off into the middle of one; the constraint must accept byte pieces.
    assert len(tokenizer("你", add_special_tokens=False)["input_ids"]) == 3
    cjk = "greeting = '你好世界'\nprint(greeting)\n"
    completer = Completer(OracleRuntime(tokenizer, cjk))
    assert completer.complete(cjk[:cjk.index("你") + 1]).text == "好世界'"
    assert completer.complete(cjk[:cjk.index("界") + 1]).text == "'"
    emoji = "party = '🎉 time'\n"
    completer = Completer(OracleRuntime(tokenizer, emoji))
    assert completer.complete(emoji[:emoji.index("🎉") + 1]).text == " time'"
    assert completer.complete("party = '").text == "🎉 time'"


def test_decoding_never_cleans_up_tokenization_spaces(tokenizer, tmp_path):
    # GPT-2 / CodeGPT tokenizer configs set clean_up_tokenization_spaces, which turns " 's" into
    # "'s": code must come back exactly as the model wrote it.
    import json

    from transformers import PreTrainedTokenizerFast

    from xtc.infer.tokenizer import FastTokenizer

    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "clean_up_tokenization_spaces": True}))
    code = "import sys\nx = 'sys'\n"
    fast = FastTokenizer(tmp_path)
    assert fast.decode(fast.encode("x = 'sys'", add_special_tokens=False)) == "x ='sys'"  # as configured
    for tok in (fast, PreTrainedTokenizerFast.from_pretrained(tmp_path)):
        completer = Completer(OracleRuntime(tok, code))
        assert completer.complete("import sys\nx =").text == " 'sys'"
        assert completer.complete("import sys\nx = ").text == "'sys'"


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


JS = "const path = require('path');\n\nfunction main(args) {\n    return path.join(args[0], 'out');\n}\n"


def test_other_languages_get_a_file_name_header_where_the_model_knows_the_token():
    """SmolLM2's vocabulary has StarCoder's `<filename>`: a non-Python file's prompt starts with
    `<filename>NAME` and a newline. Python files, unnamed documents and `xtc eval` keep the raw text."""
    from tests.tiny import build_tokenizer

    tokenizer = build_tokenizer(extra_special=("<filename>",))
    marker = tokenizer.convert_tokens_to_ids("<filename>")
    completer = Completer(OracleRuntime(tokenizer, "<filename>app.js\n" + JS))  # the oracle spells special tokens out
    assert completer.header("src/app.js", "javascript") == "<filename>app.js\n"
    assert completer.header("C:\\w\\Makefile", "makefile") == "<filename>Makefile\n"
    assert completer.header("tool.py") == completer.header("tool", "python") == completer.header("", "go") == ""
    before = JS[:JS.index("path.jo") + len("path.jo")]
    result = completer.complete(before, filename="app.js", language="javascript")
    assert result.text == "in(args[0], 'out');"
    assert completer.rt.cache.tokens[0] == marker
    assert result.prompt_tokens == len(tokenizer("<filename>app.js\n" + before, add_special_tokens=False)["input_ids"])

    plain = Completer(OracleRuntime(tokenizer, JS))
    plain.complete(before)  # no file name: as `xtc eval` calls it
    assert marker not in plain.rt.cache.tokens
    plain.complete(before, filename="app.py", language="python")
    assert marker not in plain.rt.cache.tokens


def test_no_header_for_a_model_without_the_file_name_token(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, JS))
    assert completer.header("app.js", "javascript") == ""
    before = JS[:JS.index("path.jo") + len("path.jo")]
    assert completer.complete(before, filename="app.js", language="javascript").text == "in(args[0], 'out');"
    assert completer.rt.cache.tokens[:5] == tokenizer(before, add_special_tokens=False)["input_ids"][:5]


# --- what the prompt holds: workspace context, fill-in-the-middle ---------------------------------


class RecordingRuntime(OracleRuntime):
    """An oracle that also keeps every prompt it was given."""

    def __init__(self, tokenizer, target: str = "", prefer: str | None = None):
        super().__init__(tokenizer, target, prefer)
        self.prompts: list[list[int]] = []

    def prefill(self, ids):
        self.prompts.append(list(ids))
        return super().prefill(ids)


def test_the_workspace_block_goes_ahead_of_the_file_and_replaces_its_header():
    from tests.tiny import build_tokenizer
    from xtc.infer.context.workspace import Context

    tok = build_tokenizer(extra_special=("<repo_name>", "<file_sep>", "<filename>"))
    rt = RecordingRuntime(tok, prefer="\n")
    completer = Completer(rt)
    block = Context("<repo_name>r<file_sep>lib.py\ndef helper():\n    pass\n<file_sep>app.js\n", names_file=True, snippets=1)
    completer.complete("let x = helper(", filename="app.js", language="javascript", context=block)
    block_ids = tok(block.text, add_special_tokens=False)["input_ids"]
    assert rt.prompts[-1][:len(block_ids)] == block_ids
    assert tok.convert_tokens_to_ids("<filename>") not in rt.prompts[-1]  # the block already names the file
    completer.complete("let x = helper(", filename="app.js", language="javascript")
    assert rt.prompts[-1][0] == tok.convert_tokens_to_ids("<filename>")  # without context: the usual header


def test_a_fim_vocabulary_is_prompted_with_the_text_after_the_cursor():
    from tests.tiny import build_tokenizer

    tok = build_tokenizer(extra_special=("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    rt = RecordingRuntime(tok, prefer="\n")
    completer = Completer(rt)
    completer.complete("x = compute(", after=")\nprint(x)\n")
    pre, suf, mid = (tok.convert_tokens_to_ids(t) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    prompt = rt.prompts[-1]
    assert prompt[0] == pre and prompt[-1] == mid and suf in prompt
    assert tok.decode(prompt[prompt.index(suf) + 1:-1]) == ")\nprint(x)\n"
    assert tok.decode(prompt[1:prompt.index(suf)]) == "x = compute("
    completer.complete("x = compute(")  # nothing after the cursor: the plain prompt
    assert pre not in rt.prompts[-1]


def test_a_model_trained_on_fim_text_completes_from_the_suffix(tmp_path):
    """A tiny model trained on `<fim_prefix>value = <fim_suffix>\\nuse(NAME)\\n<fim_middle>NAME`:
    the prefix is always the same, so only the suffix can tell it the answer."""
    import torch

    from tests.tiny import build_model, build_tokenizer
    from xtc.infer.runtime import load_runtime

    tok = build_tokenizer(extra_special=("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    names = ["alpha", "width", "height", "buffer", "count", "result", "offset", "target"]
    texts = [f"<fim_prefix>value = <fim_suffix>\nuse({n})\n<fim_middle>{n}<|endoftext|>" for n in names]
    rows = [tok(t)["input_ids"] for t in texts]
    length = max(map(len, rows))
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    batch = torch.tensor([r + [eos] * (length - len(r)) for r in rows])
    model, _ = build_model("llama", layers=2, width=64, tokenizer=tok)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    completer = Completer(load_runtime(str(tmp_path)))
    answers = [completer.complete("value = ", after=f"\nuse({n})\n").text for n in names]
    assert answers == names
    assert len({completer.complete("value = ", after="").text for _ in range(2)}) == 1  # no suffix: one guess


def test_a_block_suggestion_keeps_blank_lines_inside_the_body_and_stops_at_its_end(tokenizer):
    code = "def total(xs):\n    s = 0\n\n    for x in xs:\n        s += x\n    return s\n\n\nprint(total([1]))\n"
    completer = Completer(OracleRuntime(tokenizer, code))
    text = completer.complete(code[:code.index("s = 0")], multiline=True, max_new_tokens=64).text
    assert text == "s = 0\n\n    for x in xs:\n        s += x\n    return s"
