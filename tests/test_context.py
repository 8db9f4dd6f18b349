"""Workspace context: which files are indexed, how windows are ranked, and the block of snippets
that goes ahead of the current file (the same code path for `xtc eval --workspace` and the server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tokenizer
from xtc.infer.context.index import WorkspaceIndex
from xtc.infer.context.layout import FILE_SEP, REPO_NAME
from xtc.infer.context.retrieve import rank
from xtc.infer.context.walk import WalkStats, workspace_files
from xtc.infer.context.workspace import Workspace, query_lines

HELPERS = "\n".join([
    "def parse_header_value(text):",
    "    name, _, value = text.partition(':')",
    "    return name.strip().lower(), value.strip()",
    "",
    "",
    "class MessageStore:",
    "    def __init__(self):",
    "        self.messages = []",
])
FILLER = "\n".join(f"def unrelated_{i}(a, b):\n    return a * {i} + b\n" for i in range(30))


@pytest.fixture(scope="module")
def repo_tokenizer():
    return build_tokenizer(extra_special=(REPO_NAME, FILE_SEP, "<filename>"))


def index_of(files: dict[str, str]) -> WorkspaceIndex:
    index = WorkspaceIndex()
    for path, text in files.items():
        index.set_document(path, text)
    return index


@pytest.mark.parametrize("retriever", ["bm25", "jaccard"])
def test_the_window_sharing_the_querys_rare_words_ranks_first(retriever):
    index = index_of({"pkg/headers.py": HELPERS, "pkg/filler.py": FILLER})
    query = "for line in lines:\n    name, value = parse_header_value(line)\n    text.partition"
    best = rank(index, query, retriever=retriever)
    assert best and best[0][1].path == "pkg/headers.py" and "parse_header_value" in best[0][1].text
    assert all(a[0] >= b[0] for a, b in zip(best, best[1:]))


def test_the_current_files_windows_and_near_copies_of_the_query_are_left_out():
    index = index_of({"a.py": HELPERS, "b.py": HELPERS + "\n# copy"})
    assert [w.path for _, w in rank(index, HELPERS, exclude_path="a.py", near_copy=1.01)] == ["b.py"]
    assert rank(index, HELPERS, exclude_path="a.py") == []  # b.py's window repeats the query itself


def test_reindexing_and_removing_a_file_updates_the_ranking():
    index = index_of({"a.py": HELPERS, "b.py": FILLER})
    index.set_document("a.py", FILLER)
    assert not any("parse_header_value" in w.text for _, w in rank(index, "parse_header_value(x)"))
    index.set_document("c.py", HELPERS)
    index.remove("b.py")
    assert {w.path for _, w in rank(index, "parse_header_value unrelated_3")} == {"a.py", "c.py"}
    assert sorted(index.paths()) == ["a.py", "c.py"]


def test_windows_overlap_and_cover_the_whole_file():
    text = "\n".join(f"line_{i} = {i}" for i in range(45))
    index = index_of({"f.py": text})
    starts = sorted(w.start for _, w in rank(index, " ".join(f"line_{i}" for i in range(45)), limit=99, near_copy=2))
    assert starts == [0, 10, 20, 30]  # 20-line windows every 10 lines; the last reaches line 45


def test_the_block_stays_identical_while_typing_within_a_line(repo_tokenizer):
    workspace = Workspace(repo_tokenizer, index=index_of({"pkg/headers.py": HELPERS, "pkg/filler.py": FILLER}))
    before = "import pkg\n\ndef read(text):\n    for line in text.splitlines():\n        name, _, value = line.partition(':')\n        "
    first = workspace.context("pkg/reader.py", before)
    assert first.text.startswith(REPO_NAME) and first.text.endswith(f"{FILE_SEP}pkg/reader.py\n") and first.names_file
    assert "parse_header_value" in first.text
    assert workspace.context("pkg/reader.py", before + "parse_he").text == first.text
    assert query_lines(before + "parse_he") == query_lines(before)
    other = workspace.context("pkg/reader.py", before + "parse_header_value(line)\n        unrelated_4")
    assert query_lines(before + "x\n") != query_lines(before) and other.snippets >= 1


def test_the_block_fits_its_token_budget(repo_tokenizer):
    files = {f"m{i}.py": FILLER for i in range(5)}
    for budget in (0, 64, 256):
        block = Workspace(repo_tokenizer, index=index_of(files), budget=budget).context("x.py", FILLER[:400])
        assert len(repo_tokenizer(block.text, add_special_tokens=False)["input_ids"]) <= budget
        assert (block.text == "") == (block.snippets == 0)


def test_without_repository_tokens_the_snippets_are_comments(tokenizer):
    workspace = Workspace(tokenizer, index=index_of({"pkg/headers.py": HELPERS}), layout="repo")
    block = workspace.context("app.py", "x = 1\nname, value = parse_header_value(text)\n")
    assert workspace.layout == "comment" and not block.names_file
    assert block.text.startswith("# Compare this snippet from pkg/headers.py:\n# def parse_header_value(text):")
    assert all(line.startswith("#") for line in block.text.splitlines())


# --- which files a workspace folder gives ---------------------------------------------------------


def test_the_walk_skips_what_is_not_the_users_source(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("x = 1\n")
    (tmp_path / "src" / "notes.md").write_text("notes\n")
    for folder in (".git", "node_modules", "env", "build"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.py").write_text("y = 2\n")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "big.py").write_text("z = 3\n")
    (tmp_path / ".gitignore").write_text("generated/\n*.log\n")
    (tmp_path / "run.log").write_text("log\n")
    (tmp_path / "blob.py").write_bytes(b"\x00\x01binary")
    (tmp_path / "latin.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    (tmp_path / "huge.py").write_text("a = 1\n" * 200_000)
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "secret.env.py").write_text("KEY = 1\n")
    stats = WalkStats()
    found = dict(workspace_files(tmp_path, excluded=lambda rel: rel.startswith("secret"), max_file_bytes=100_000,
                                 stats=stats))
    assert sorted(found) == ["src/app.py", "src/notes.md"]
    assert found["src/app.py"] == "x = 1\n"
    assert {"binary", "not UTF-8", "too big"} <= set(stats.skipped)


def test_the_walk_honours_nested_gitignores_relative_to_their_folder(tmp_path):
    """As git does: a subfolder's .gitignore applies below it, its patterns relative to it (a
    leading `/` anchors there), and its `!` re-includes what a file above ignored."""
    files = ["a.py", "gen.py", "keep.py", "pkg/a.py", "pkg/gen.py", "pkg/keep.py", "pkg/sub/gen.py",
             "pkg/sub/b.py", "pkg/cache/c.py", "other/a.py", "other/gen.py", "other/keep.py"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("keep.py\n")
    (tmp_path / "pkg" / ".gitignore").write_text("/gen.py\ncache/\n!keep.py\n")  # gen.py only in pkg/ itself
    (tmp_path / "other" / ".gitignore").write_text("*.py\n!a.py\n")
    assert sorted(rel for rel, _ in workspace_files(tmp_path)) == [
        "a.py", "gen.py", "other/a.py", "pkg/a.py", "pkg/keep.py", "pkg/sub/b.py", "pkg/sub/gen.py"]


def test_the_walk_is_bounded_in_files(tmp_path):
    for i in range(30):
        (tmp_path / f"m{i:02}.py").write_text(f"v{i} = {i}\n")
    assert len(list(workspace_files(tmp_path, max_files=7))) == 7


def test_a_folder_that_disappears_or_cannot_be_read_is_skipped(tmp_path):
    assert list(workspace_files(tmp_path / "gone")) == []
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.py").write_text("a = 1\n")
    os.chmod(locked, 0)
    try:
        assert isinstance(list(workspace_files(tmp_path)), list)
    finally:
        os.chmod(locked, 0o755)


def test_add_folder_indexes_paths_relative_to_the_root(tmp_path, tokenizer):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "headers.py").write_text(HELPERS)
    workspace = Workspace(tokenizer)
    stats = workspace.add_folder(tmp_path)
    assert stats.files == 1 and workspace.index.paths() == ["pkg/headers.py"]
    assert isinstance(Path(tmp_path), Path)
