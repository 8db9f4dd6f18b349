"""Member names: after `module.` the completer writes only a name that workspace module defines."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.test_complete import OracleRuntime
from tests.test_context import HELPERS, index_of
from tests.tiny import build_tokenizer
from xtc.infer.complete import Completer, _log_softmax_at
from xtc.infer.context.members import MemberNames, attribute_at_end, defined_names
from xtc.infer.context.references import ModuleMap
from xtc.infer.context.workspace import Context, Workspace

MEMBERS = frozenset({"parse_header_value", "MessageStore"})


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_the_cursor_after_a_simple_name_and_a_dot_is_an_attribute():
    assert attribute_at_end("x = helpers.") == ("helpers", "")
    assert attribute_at_end("    helpers.parse_he") == ("helpers", "parse_he")
    assert attribute_at_end("x = a.b.") is None  # only a module directly in front of the dot
    assert attribute_at_end("x = 1.") is None
    assert attribute_at_end("x = helpers.parse(") is None


def test_a_module_defines_its_top_level_names_including_conditional_ones():
    text = "\n".join(["import os, json as j", "from .x import y as z", "A, (B, *C) = 1, (2, 3)", "D: int = 4",
                      "def f(): pass", "class K: pass", "if os.name == 'nt':", "    def g(): pass", "else:",
                      "    h = 1", "try:", "    import zlib", "except ImportError:", "    zlib = None",
                      "with open('f') as handle:", "    w = 2"])
    assert defined_names(text, "m.py") == {"os", "j", "z", "A", "B", "C", "D", "f", "K", "g", "h", "zlib",
                                           "handle", "w"}


def test_names_bound_by_loops_and_matches_count_too():
    text = "for i in range(3):\n    y = i\nwhile False:\n    z = 1\nmatch 1:\n    case 1:\n        q = 2\n"
    assert defined_names(text, "m.py") == {"i", "y", "z", "q"}


def test_names_that_cannot_be_known_give_no_constraint():
    assert defined_names("def f(:\n", "m.py") is None  # does not parse
    assert defined_names("def __getattr__(name): ...\n", "m.py") is None  # names made at run time
    assert defined_names("globals().update(CODES)\n", "m.py") is None
    assert defined_names("import sys\nsys.modules[__name__] = Lazy()\n", "m.py") is None
    assert defined_names("from elsewhere import *\n", "m.py", lambda dotted, path: None) is None


def test_star_imports_are_followed_through_the_workspace():
    texts = {"pkg/_impl.py": "def deep(): pass\nfrom ._more import *\n", "pkg/_more.py": "DEEPER = 1\n"}
    names = MemberNames(texts.get, lambda: ModuleMap(texts)).names
    texts["pkg/api.py"] = "from ._impl import *\nTOP = 1\n"
    assert names("pkg/api.py") == {"deep", "DEEPER", "TOP"}
    texts["pkg/_more.py"] = "DEEPEST = 1\n"  # a followed module changed: the names follow it
    assert names("pkg/api.py") == {"deep", "DEEPEST", "TOP"}


def test_a_chained_star_import_is_resolved_from_the_file_that_makes_it():
    texts = {"pkg/__init__.py": "from .sub import *\n", "pkg/sub/__init__.py": "from .inner import *\n",
             "pkg/sub/inner.py": "real = 1\n", "pkg/inner.py": "wrong = 1\n"}
    assert MemberNames(texts.get, lambda: ModuleMap(texts)).names("pkg/__init__.py") >= {"real", "sub", "inner"}


def test_the_base_is_resolved_through_the_imports_or_by_module_name():
    files = {"pkg/helpers.py": HELPERS, "pkg/__init__.py": "VERSION = 1\n", "pkg/util.py": "def tool(): pass\n",
             "other/helpers.py": "def wrong(): pass\n"}
    members = MemberNames(files.get, lambda: ModuleMap(files))
    assert members.at("import pkg.helpers as h\nx = h.", "app.py") == {"parse_header_value", "MessageStore"}
    assert members.at("from pkg import helpers\nx = helpers.", "app.py") >= MEMBERS
    assert members.at("from pkg import util\nutil.", "app.py") == {"tool"}
    assert members.at("import pkg\npkg.", "app.py") == {"VERSION", "helpers", "util"}  # a package's modules too
    # Imports out of sight: the module named like the base, nearest the current file first.
    assert members.at("x = helpers.", "pkg/app.py") >= MEMBERS
    assert members.at("x = helpers.", "other/app.py") == {"wrong"}


def test_names_that_are_not_modules_give_no_constraint():
    files = {"pkg/helpers.py": HELPERS, "pkg/__init__.py": "from .helpers import MessageStore\n"}
    members = MemberNames(files.get, lambda: ModuleMap(files))
    assert members.at("from pkg import MessageStore\nMessageStore.", "app.py") is None  # a class, not a module
    assert members.at("helpers = load()\nhelpers.", "pkg/app.py") is None  # a variable the file binds
    assert members.at("def run(helpers):\n    helpers.", "pkg/app.py") is None  # a parameter
    assert members.at("x = unknown.", "pkg/app.py") is None
    for binding in ("tokenizer, helpers = load()", "(helpers, x) = pair", "f = lambda helpers: 1",
                    "ys = [h for helpers in hs]", "if (helpers := find()):"):
        assert members.at(binding + "\nhelpers.", "pkg/app.py") is None, binding


def test_the_completer_writes_a_member_name_where_the_model_would_misspell_it(tokenizer):
    before = "import helpers\n\nx = helpers."
    completer = Completer(OracleRuntime(tokenizer, before + "parse_header_valeu(line)\n"))
    assert completer.complete(before).text.startswith("parse_header_valeu")  # the model alone misspells it
    steered = completer.complete(before, context=Context(members=MEMBERS))
    assert re.match(r"\w+", steered.text).group() in MEMBERS and steered.steered
    # Mid-name (the typed part healed and continued), and a name no member starts with: left alone.
    typed = "import helpers\n\nx = helpers.parse_he"
    completer = Completer(OracleRuntime(tokenizer, typed + "ader_valeu(line)\n"))
    assert re.match(r"\w+", completer.complete(typed, context=Context(members=MEMBERS)).text).group() == "ader_value"
    unknown = "import helpers\n\nx = helpers.zz"
    completer = Completer(OracleRuntime(tokenizer, unknown + "top()\n"))
    answer = completer.complete(unknown, context=Context(members=MEMBERS))
    assert answer.text == "top()" and not answer.steered


def test_after_a_module_name_a_dot_goes_on_with_a_member_and_anything_else_is_free(tokenizer):
    before = "import helpers\n\nx = helpers"
    completer = Completer(OracleRuntime(tokenizer, before + ".parse_header_valeu(line)\n"))
    steered = completer.complete(before, context=Context(members=MEMBERS))
    assert re.match(r"\.(\w+)", steered.text).group(1) in MEMBERS and steered.steered
    completer = Completer(OracleRuntime(tokenizer, before + "_cache = {}\n"))
    assert completer.complete(before, context=Context(members=MEMBERS)).text == "_cache = {}"


def test_a_steered_token_is_scored_among_the_allowed_tokens(tokenizer):
    completer = Completer(OracleRuntime(tokenizer, "x"))
    logits = np.zeros(completer.rt.vocab_size, dtype=np.float32)
    logits[tokenizer.convert_tokens_to_ids("(")] = 10.0  # the model wants `(`: no member starts so
    token, allowed = completer._choose(logits, b"", b"", "", False, (MEMBERS, "", b"", False))
    assert completer.bytes[token] and (b"parse_header_value".startswith(completer.bytes[token])
                                       or b"MessageStore".startswith(completer.bytes[token]))
    assert allowed is not None and _log_softmax_at(allowed, token) > _log_softmax_at(logits, token) + 5


def test_the_workspace_gives_member_names_even_without_a_snippet_budget(tokenizer):
    index = index_of({"pkg/helpers.py": HELPERS})
    before = "from pkg import helpers\nx = helpers."
    assert Workspace(tokenizer, index=index, budget=0).context("app.py", before).members == MEMBERS
    assert Workspace(tokenizer, index=index, member_names=False).context("app.py", before).members is None
    assert Workspace(tokenizer, index=index).context("app.py", "x = 1\ny = ").members is None
    assert Workspace(tokenizer, index=index).context("app.py", before[:-1]).members == MEMBERS  # `helpers`
