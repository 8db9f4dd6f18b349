"""Building the repository-level benchmark, the CrossCodeEval way: every item's line uses a name
that only another file of its source tree defines, so a model that sees the current file alone
cannot know it (rules: benchmarks/data/README.md).

Each `--source` directory is one tree (a package such as `email/`); an item's `path` is its file
relative to the tree's parent, so `xtc eval --workspace PARENT` finds the other files.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import random
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from xtc.core.errors import XtcError
from xtc.infer.context.walk import workspace_files
from xtc.eval.build import Cut, _cuts_from_tokens, _line_starts, _tokens, make_item, python_files, read_source

#: Names too common or too short to say anything about the other files.
MIN_NAME_CHARS = 3
_WORD = re.compile(r"[A-Za-z_]\w*")
#: Builtins, keywords and the methods of builtin types (`environ.get` is not another file's `get`).
_COMMON = (frozenset(dir(builtins)) | frozenset(keyword.kwlist) | {"self", "cls"}
           | {name for t in (object, str, bytes, int, float, list, dict, set, tuple, BaseException) for name in dir(t)})


@dataclass
class _File:
    path: str  # relative to the tree's parent
    tree: int
    text: str
    tokens: list[tokenize.TokenInfo]
    defined: set[str]  # what the module defines for other files (`module_names`)
    bound: set[str]  # every name it binds itself


def module_names(text: str) -> tuple[set[str], set[str]]:
    """(defined, bound) from one parse of the module. `defined`: functions, classes and methods
    anywhere, and module-level variables, without dunder, very short or builtin names (what other
    files may use). `bound`: every name the module binds itself (definitions, parameters,
    assignment targets, imports, `self.name =` attributes)."""
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError):
        return set(), set()
    defined, bound = set(), set()
    for node in ast.walk(module):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            bound.add(node.attr)  # self.name = ...: the file defines that attribute
    for node in module.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        defined.update(t.id for t in targets if isinstance(t, ast.Name))
    defined = {n for n in defined if len(n) >= MIN_NAME_CHARS and not n.startswith("__") and n not in _COMMON}
    return defined, bound


def cross_file_cuts(file: _File, elsewhere: set[str], shared_lines: set[str], min_input_chars: int) -> list[tuple[Cut, str]]:
    """(cut, name) for every admissible cut (`build.cut_points` rules) whose rest of line uses a
    name defined in the tree (`elsewhere`) but not bound by this file, and not written
    anywhere before the cursor; lines that occur verbatim in another file are skipped."""
    first = {}  # each word's first offset in the file (strings and comments included)
    for match in _WORD.finditer(file.text):
        first.setdefault(match.group(), match.start())
    line_starts = _line_starts(file.text)
    names_on_row = defaultdict(list)  # row -> [(offset, name)] of cross-file names
    for tok in file.tokens:
        if tok.type == tokenize.NAME and tok.string in elsewhere and tok.string not in file.bound:
            names_on_row[tok.start[0]].append((line_starts[tok.start[0] - 1] + tok.start[1], tok.string))
    found = []
    for cut in _cuts_from_tokens(file.text, file.tokens, min_input_chars):
        candidates = names_on_row.get(cut.row)
        if not candidates:
            continue
        line = file.text[line_starts[cut.row - 1]:cut.line_end].strip()
        if line in shared_lines:
            continue
        for offset, name in candidates:
            if offset >= cut.offset and first[name] >= cut.offset:  # not in the text before the cursor
                found.append((cut, name))
                break
    return found


def build_cross_file_benchmark(
    sources: list[Path],
    n: int,
    seed: int,
    *,
    min_input_chars: int = 200,
    max_input_chars: int | None = 4000,
    max_suffix_chars: int | None = 1000,
) -> list[dict]:
    """Sample `n` cross-file items from the trees `sources` (fewer if they run out), reproducibly:
    files shuffled with `random.Random(seed)` and visited in rounds, one new cut per visit, drawn
    uniformly among the file's cross-file cuts. Items add `path` and `names` (the other files'
    names the line uses) to the usual fields. The sources share one parent folder: the workspace
    the items are evaluated in; a line written in any other file of it is not cut."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    parent = Path(sources[0]).resolve().parent if sources else Path(".")
    files: list[_File] = []
    for tree, source in enumerate(sources):
        source = Path(source)
        if source.resolve().parent != parent:
            raise XtcError(f"{source}: every --source of a cross-file benchmark must be in {parent}")
        if not source.is_dir():
            raise XtcError(f"{source}: no such directory")
        for path, name in python_files([source]):
            text = read_source(path)
            tokens = None if text is None else _tokens(text)
            if tokens is not None:
                files.append(_File(f"{source.name}/{name}", tree, text, tokens, *module_names(text)))
    # Lines of every file the workspace holds (what `xtc eval --workspace` will index), by file.
    line_files = defaultdict(set)  # stripped line -> the workspace files holding it
    for rel, text in workspace_files(parent, max_files=100_000):
        for line in text.split("\n"):
            if line.strip():
                line_files[line.strip()].add(rel)
    tree_names = defaultdict(set)  # tree -> the names its files define
    for f in files:
        tree_names[f.tree] |= f.defined
    rng = random.Random(seed)
    order = list(range(len(files)))
    rng.shuffle(order)
    cuts: dict[int, list[tuple[Cut, str]]] = {}
    for i in order:
        f = files[i]
        shared = {line.strip() for line in f.text.split("\n") if line_files.get(line.strip(), set()) - {f.path}}
        cuts[i] = cross_file_cuts(f, tree_names[f.tree], shared, min_input_chars)
    items: list[dict] = []
    pending = [i for i in order if cuts[i]]
    while len(items) < n and pending:
        still = []
        for i in pending:
            if len(items) >= n:
                break
            cut, name = cuts[i][rng.randrange(len(cuts[i]))]
            cuts[i] = [(c, m) for c, m in cuts[i] if c.row != cut.row]  # one item per line
            item = make_item(files[i].text, cut, files[i].path, max_input_chars, max_suffix_chars)
            items.append({**item, "names": [name]})
            if cuts[i]:
                still.append(i)
        pending = still
    return items
