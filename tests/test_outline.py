"""Outlines of the modules named near the cursor: a module's names without their bodies, found
through the file's imports or by the module's name, placed in the workspace block."""

from __future__ import annotations

from tests.tiny import build_tokenizer
from xtc.infer.context.index import WorkspaceIndex
from xtc.infer.context.layout import FILE_SEP, REPO_NAME
from xtc.infer.context.outline import outline
from xtc.infer.context.references import ModuleMap, attribute_bases, imports, referenced_files
from xtc.infer.context.workspace import Workspace

FORKSERVER = '''"""Doc."""
import struct

SIGNED_STRUCT = struct.Struct('q')
TABLE = {''' + ", ".join(f"'k{i}': {i}" for i in range(20)) + '''}


class ForkServer(object):
    """A server."""

    def __init__(self):
        self._lock = None

    def __repr__(self):
        return "ForkServer()"

    @property
    def address(self):
        return self._address

    def connect_to_new_process(self,
                               fds):
        # a comment
        return fds


def read_signed(fd):
    data = b''
    return data

if True:
    def write_signed(fd, n): return n
'''


def test_an_outline_keeps_names_and_signatures_and_drops_bodies():
    text = outline(FORKSERVER, "pkg/forkserver.py")
    assert text.split("\n") == [
        "SIGNED_STRUCT = struct.Struct('q')",
        ("TABLE = {" + ", ".join(f"'k{i}': {i}" for i in range(20)))[:100],
        "class ForkServer(object):",
        "    def __init__(self): ...",
        "    @property",
        "    def address(self): ...",
        "    def connect_to_new_process(self,",
        "                               fds): ...",
        "def read_signed(fd): ...",
        "    def write_signed(fd, n): ...",
    ]


def test_no_outline_for_other_languages():
    assert outline("function f() {}", "a.js") == ""


def test_code_that_does_not_parse_is_outlined_by_its_declaration_lines():
    text = "LIMIT = 3\nclass A:\n    def ok(self, x):\n        return x\ndef broken(:\n    if a == b:\n        pass\n"
    assert outline(text, "a.py").split("\n") == ["LIMIT = 3", "class A:", "    def ok(self, x):", "def broken(:"]


def test_imports_name_modules_relative_and_absolute():
    before = ("import os.path\nimport numpy as np\nfrom . import forkserver, util as u\n"
              "from .context import (reduction,\n    set_spawning_popen)\nfrom email.message import Message\nx = 1\n")
    found = imports(before)
    assert found["os"] == ["os"] and found["np"] == ["numpy"]
    assert found["forkserver"] == [".forkserver", "."] and found["u"] == [".util", "."]
    assert found["reduction"] == [".context.reduction", ".context"]
    assert found["Message"] == ["email.message.Message", "email.message"]


def test_attribute_bases_are_the_names_before_a_dot_last_first():
    assert attribute_bases("x = util.debug(forkserver.") == ["forkserver", "util"]
    assert attribute_bases("self.a.b(cls.c)") == ["a"]
    assert attribute_bases("1.5 + x") == []


def test_the_module_before_the_cursors_dot_comes_first_found_by_import_or_by_name():
    modules = ModuleMap(["src/mp/forkserver.py", "src/mp/util.py", "other/util.py", "src/mp/popen.py",
                         "src/mp/context/__init__.py", "README.md"])
    before = "from . import forkserver\nutil.debug('x')\nself.pid = forkserver."
    assert referenced_files(before, "src/mp/popen.py", modules, query_lines=20, limit=2) == [
        "src/mp/forkserver.py", "src/mp/util.py"]  # util: no import in sight, the nearest by name
    assert referenced_files("from .context import reduction\nreduction.", "src/mp/popen.py", modules,
                            query_lines=20, limit=2) == ["src/mp/context/__init__.py"]
    assert referenced_files("import os\nos.", "src/mp/popen.py", modules, query_lines=20, limit=2) == []
    assert referenced_files("popen.", "src/mp/popen.py", modules, query_lines=20, limit=2) == []  # itself


def test_the_block_ends_with_the_outline_of_the_module_named_at_the_cursor():
    tokenizer = build_tokenizer(extra_special=(REPO_NAME, FILE_SEP, "<filename>"))
    index = WorkspaceIndex()
    index.set_document("mp/forkserver.py", FORKSERVER)
    index.set_document("mp/popen.py", "")
    workspace = Workspace(tokenizer, budget=512, index=index, outlines=0.5)
    before = "import os\n\ndef launch(self):\n    self.pid = forkserver."
    block = workspace.context("mp/popen.py", before).text
    assert block.endswith(f"{FILE_SEP}mp/forkserver.py\n" + outline(FORKSERVER, "mp/forkserver.py")
                          + f"\n{FILE_SEP}mp/popen.py\n")
    assert len(tokenizer(block, add_special_tokens=False)["input_ids"]) <= 512
    assert "def read_signed(fd): ..." not in Workspace(tokenizer, budget=512, index=index, outlines=0).context(
        "mp/popen.py", before).text
    small = Workspace(tokenizer, budget=200, index=index, outlines=0.5).context("mp/popen.py", before).text
    assert "SIGNED_STRUCT" in small and "def read_signed(fd): ..." not in small  # cut at a line, to its share


def test_the_block_changes_when_the_cursors_line_names_a_new_module_not_while_typing():
    tokenizer = build_tokenizer(extra_special=(REPO_NAME, FILE_SEP, "<filename>"))
    index = WorkspaceIndex()
    index.set_document("mp/forkserver.py", FORKSERVER)
    workspace = Workspace(tokenizer, budget=512, index=index, outlines=0.5)
    head = "def launch(self):\n    self.pid = "
    plain = workspace.context("mp/popen.py", head + "launch").text
    named = workspace.context("mp/popen.py", head + "forkserver.").text
    assert named != plain and "read_signed" in named
    assert workspace.context("mp/popen.py", head + "forkserver.read_si").text == named
