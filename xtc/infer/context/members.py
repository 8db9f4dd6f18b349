"""The names a module offers, for a cursor right after `module.` (or `module.pre`): the completer
then writes only a name the module defines. A 135M model sees `forkserver.` and guesses a
plausible name; the workspace knows the real ones (an editor's LSP completion list does the same).

Only modules are resolved (`import a`, `from pkg import a` where `a` is a submodule, or a local
module named like the base when the file's imports are out of sight); an object's attributes
are not known here. When a module's names cannot be known for sure (it does not parse, defines a
module `__getattr__`, or star-imports what the workspace lacks), there is no constraint.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import PurePosixPath

from xtc.infer.context.references import ModuleMap, imports, module_paths

_ATTRIBUTE_AT_END = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\.\s*([A-Za-z_]\w*)?$")
_NAME_AT_END = re.compile(r"(?<![\w.])([A-Za-z_]\w*)$")
_STAR_DEPTH = 3  # star imports followed this deep (`from .x import *` chains in packages)


def attribute_at_end(line: str) -> tuple[str, str] | None:
    """(base, typed part of the name) when `line` ends inside `base.name`; None otherwise.
    `a.b.c` has no simple base (only a module directly in front of the dot is resolved)."""
    match = _ATTRIBUTE_AT_END.search(line)
    return (match.group(1), match.group(2) or "") if match else None


def defined_names(text: str, path: str, follow: Callable[[str, str], tuple[str, str] | None] | None = None,
                  depth: int = 0) -> frozenset[str] | None:
    """The module-level names `text` (the file `path`) defines, or None when they cannot be known.
    `follow(dotted, path)` returns (path, text) of the module a star import in `path` names (None:
    not found)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    names: set[str] = set()
    if not _collect(tree.body, names, path, follow, depth):
        return None
    return frozenset(names)


def _collect(body: list[ast.stmt], names: set[str], path: str, follow, depth: int) -> bool:
    for node in body:
        if _makes_names_at_run_time(node):
            return False
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":  # names made at run time
                return False
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(_target_names(target))
        elif isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name)
                    continue
                dotted = "." * node.level + (node.module or "")
                module = follow(dotted, path) if follow is not None and depth < _STAR_DEPTH else None
                found = defined_names(module[1], module[0], follow, depth + 1) if module is not None else None
                if found is None:  # a star import we cannot see through
                    return False
                names.update(found)
        elif isinstance(node, _COMPOUND):  # platform- or version-dependent definitions, loops
            blocks = [getattr(node, "body", []), getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            blocks += [case.body for case in getattr(node, "cases", [])]
            if not all(_collect(block, names, path, follow, depth) for block in blocks):
                return False
            targets = [item.optional_vars for item in getattr(node, "items", []) if item.optional_vars is not None]
            targets += [node.target] if isinstance(node, (ast.For, ast.AsyncFor)) else []
            for target in targets:
                names.update(_target_names(target))
        elif type(node).__name__ == "TypeAlias":  # `type X = ...` (Python 3.12)
            names.update(_target_names(node.name))
    return True


_COMPOUND = tuple(getattr(ast, kind) for kind in ("If", "Try", "TryStar", "With", "AsyncWith", "For", "AsyncFor",
                                                   "While", "Match") if hasattr(ast, kind))


def _makes_names_at_run_time(node: ast.stmt) -> bool:
    """`globals()[...] = `, `globals().update(...)`, `setattr(module, ...)`, `sys.modules[...] = `
    at module level: the module's names are not all written in it."""
    if isinstance(node, (*_COMPOUND, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False  # their bodies are looked at on their own (or not at all)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("globals", "setattr", "vars"):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr == "modules" and isinstance(sub.value, ast.Name) \
                and sub.value.id == "sys":
            return True
    return False


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


_BINDINGS = (r"^\s*(?:[\w\s,*()\[\]]*,\s*)?\(?\s*\*?{n}\s*(?:[,)\]][\w\s,*()\[\]]*)?(?::[^=\n]*)?=(?!=)",
             r"\bas\s+{n}\b", r"\bfor\s+\(?(?:[\w\s,()]*,\s*)?{n}\b", r"\b(?:def|class)\s+{n}\b",
             r"\bglobal\s+(?:[\w\s,]*,\s*)?{n}\b", r"\blambda\b[^:\n]*\b{n}\b[^:\n]*:", r"\b{n}\s*:=")


def _bound(name: str, before: str) -> bool:
    """Whether the file binds `name` itself (an assignment, a loop or `as` variable, a def or
    class, a parameter, a lambda's or comprehension's variable): then it is not a module found by name."""
    n = re.escape(name)
    if any(re.search(p.format(n=n), before, re.MULTILINE) for p in _BINDINGS):
        return True
    for params in re.findall(r"\bdef\s+\w+\s*\(([^)]*)", before):
        if re.search(rf"(?:^|[,(*\s]){n}\s*(?:[:=,]|$)", params.strip()):
            return True
    return False


class MemberNames:
    """The names of the workspace module in front of the cursor's dot. `texts(path)` gives a
    workspace file's text; `modules()` the current `ModuleMap`."""

    def __init__(self, texts: Callable[[str], str | None], modules: Callable[[], ModuleMap]):
        self._texts, self._modules = texts, modules
        # path -> (the (path, text) of every file the names were read from, the module map, names)
        self._cache: dict[str, tuple[tuple[tuple[str, str | None], ...], ModuleMap, frozenset[str] | None]] = {}
        self._bases: dict[tuple, str | None] = {}  # (current, base, text before it, module map) -> module file

    def at(self, before: str, current: str) -> frozenset[str] | None:
        """The names the cursor's `base.` may continue with, or that may follow a `.` written
        after a cursor right after `base`; None: no constraint."""
        line = before.rsplit("\n", 1)[-1]
        match = _ATTRIBUTE_AT_END.search(line) or _NAME_AT_END.search(line)
        if match is None:
            return None
        # Which module the base names depends only on the text before it, which stays while the
        # user types the name after it: resolve it once (reading the imports and bindings of a
        # long file costs tens of milliseconds).
        ahead = before[:len(before) - len(line) + match.start(1)]
        key = (current, match.group(1), ahead, self._modules())  # a new file set: resolved anew
        if key not in self._bases:
            if len(self._bases) > 16:
                self._bases.clear()
            self._bases[key] = self.module_of(match.group(1), before, current)
        path = self._bases[key]
        return self.names(path) if path is not None else None

    def module_of(self, base: str, before: str, current: str) -> str | None:
        """The workspace file of the module `base` names in `current`, or None (not a module)."""
        modules = self._modules()
        aliases = imports(before)
        if base in aliases:
            dotted = aliases[base][0]  # `from pkg import a`: only the submodule `pkg.a` is a module
            return next((p for p in map(modules.find, module_paths(dotted, current)) if p and p != current), None)
        if _bound(base, before):
            return None
        return modules.nearest(base, current)

    def names(self, path: str) -> frozenset[str] | None:
        """The names the module `path` defines (a star import's included), cached while neither
        its text, nor a followed module's, nor the workspace's files change."""
        text, modules = self._texts(path), self._modules()
        if text is None:
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[1] is modules and all(self._texts(p) == t for p, t in cached[0]):
            return cached[2]
        read = [(path, text)]

        def follow(dotted: str, importer: str) -> tuple[str, str] | None:
            found = next((p for p in map(modules.find, module_paths(dotted, importer)) if p), None)
            followed = self._texts(found) if found is not None else None
            read.append((found or dotted, followed))
            return (found, followed) if followed is not None else None

        names = defined_names(text, path, follow)
        if names is not None and PurePosixPath(path).name == "__init__.py":
            names = names | self._submodules(path)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[path] = (tuple(read), modules, names)
        return names

    def _submodules(self, init: str) -> frozenset[str]:
        """A package's modules are its attributes too (once imported, as code using them does)."""
        folder = PurePosixPath(init).parent
        found = set()
        for path in self._modules().paths:
            pure = PurePosixPath(path)
            if pure.suffix == ".py" and pure.parent == folder and pure.stem != "__init__":
                found.add(pure.stem)
            elif pure.name == "__init__.py" and pure.parent.parent == folder:
                found.add(pure.parent.name)
        return frozenset(found)
