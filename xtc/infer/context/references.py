"""Which workspace files the code at the cursor refers to: the module in front of a dot
(`forkserver.` on the cursor's line, `util.debug(` in the lines above), found through the file's
imports or, when the imports are out of sight, by the module's name, nearest package first.
Retrieval by similarity cannot find these: the name the line needs occurs nowhere near it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

_IMPORT = re.compile(r"^\s*(?:from\s+[.\w]+\s+import\b|import\s+\w)")
_DOTTED = re.compile(r"\b([A-Za-z_]\w*)\s*\.(?=\s*(?:[A-Za-z_]|$))")
_NOT_MODULES = frozenset({"self", "cls", "super"})


def attribute_bases(text: str) -> list[str]:
    """The names in front of a dot in `text`, last first, each once."""
    seen: dict[str, None] = {}
    for name in reversed(_DOTTED.findall(text)):
        if name not in _NOT_MODULES:
            seen.setdefault(name)
    return list(seen)


def imports(before: str) -> dict[str, list[str]]:
    """alias -> the dotted modules it may name, from the import statements in `before`
    (relative ones kept relative: `.` + name). `from m import x` may bind a submodule `m.x` or a
    name of `m`: both are candidates, the submodule first."""
    found: dict[str, list[str]] = {}
    lines = before.split("\n")
    i = 0
    while i < len(lines):
        if not _IMPORT.match(lines[i]):
            i += 1
            continue
        statement, j = lines[i].strip(), i
        while (statement.count("(") > statement.count(")") or statement.endswith("\\")) and j + 1 < len(lines) \
                and j - i < 100:
            j += 1
            statement = statement.rstrip("\\") + " " + lines[j].strip()
        i = j + 1
        try:
            nodes = ast.parse(statement).body
        except SyntaxError:
            continue
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found[alias.asname or alias.name.split(".")[0]] = [alias.name if alias.asname else
                                                                       alias.name.split(".")[0]]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                for alias in node.names:
                    sep = "" if base.endswith(".") else "."
                    found[alias.asname or alias.name] = [base + sep + alias.name, base]
    return found


def module_paths(dotted: str, current: str) -> list[str]:
    """Candidate file paths of a dotted module (relative ones resolved from `current`'s folder)."""
    level = len(dotted) - len(dotted.lstrip("."))
    parts = [p for p in dotted.lstrip(".").split(".") if p]
    if level:
        folder = PurePosixPath(current).parent
        for _ in range(level - 1):
            folder = folder.parent
        base = folder.joinpath(*parts) if parts else folder
        return [f"{base}.py" if parts else "", f"{base}/__init__.py"]
    return ["/".join(parts) + ".py", "/".join(parts) + "/__init__.py"]


class ModuleMap:
    """The workspace's files by module name (`pkg/mod.py` and `mod/__init__.py` are both `mod`)."""

    def __init__(self, paths: Iterable[str]):
        self.paths = set(paths)
        self.by_name: dict[str, list[str]] = {}
        for path in self.paths:
            pure = PurePosixPath(path)
            if pure.suffix not in (".py", ".pyi"):
                continue
            name = pure.parent.name if pure.stem == "__init__" else pure.stem
            self.by_name.setdefault(name, []).append(path)

    def find(self, candidate: str) -> str | None:
        """A workspace file that is `candidate` or ends with it (the workspace may hold a `src/`)."""
        if not candidate:
            return None
        if candidate in self.paths:
            return candidate
        name = PurePosixPath(candidate)
        stem = name.parent.name if name.stem == "__init__" else name.stem
        for path in sorted(self.by_name.get(stem, ())):
            if path.endswith("/" + candidate):
                return path
        return None

    def nearest(self, name: str, current: str) -> str | None:
        """The file of module `name` nearest `current` (the same package first)."""
        here = PurePosixPath(current).parent.parts

        def distance(path: str) -> tuple:
            parts = PurePosixPath(path).parent.parts
            common = next((k for k, (a, b) in enumerate(zip(parts, here)) if a != b), min(len(parts), len(here)))
            return (-common, len(parts), path)

        candidates = [p for p in self.by_name.get(name, ()) if p != current]
        return min(candidates, key=distance) if candidates else None


def referenced_files(before: str, current: str, modules: ModuleMap, *, query_lines: int, limit: int) -> list[str]:
    """Up to `limit` workspace files named in front of a dot, the cursor's line first, then the
    `query_lines` lines above it from the nearest up."""
    lines = before.split("\n")
    bases = attribute_bases(lines[-1]) + attribute_bases("\n".join(lines[-1 - query_lines:-1]))
    aliases = imports(before) if bases else {}
    found: list[str] = []
    for name in dict.fromkeys(bases):
        path = None
        for dotted in aliases.get(name, ()):
            path = next((p for p in map(modules.find, module_paths(dotted, current)) if p), None)
            if path:
                break
        if path is None and name not in aliases:  # imports out of sight (or a local module): by name
            path = modules.nearest(name, current)
        if path and path != current and path not in found:
            found.append(path)
            if len(found) == limit:
                break
    return found
