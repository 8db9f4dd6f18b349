"""A file's outline: its declarations without their bodies (signatures, classes with their
methods, module constants), written like a `.pyi` stub. It tells the model which names another
module offers in a fraction of the module's tokens (Aider's repository map does the same)."""

from __future__ import annotations

import ast
import re

_DECORATORS = frozenset({"property", "staticmethod", "classmethod", "abstractmethod"})
_MAX_LINE = 100  # a long constant (a table, a regex) is cut: its name is what matters
_DECLARATION = re.compile(r"^(\s*)(?:async\s+def|def|class)\s+\w+|^[A-Za-z_]\w*\s*(?::[^=]*)?=[^=]")


def outline(text: str, path: str) -> str:
    """The outline of a Python file (empty for other languages). Code that does not parse (being
    edited, or with lines the index cut) is outlined line by line: its declaration lines."""
    if not path.endswith((".py", ".pyi")):
        return ""
    lines = text.split("\n")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return "\n".join(line.rstrip()[:_MAX_LINE] for line in lines if _DECLARATION.match(line))
    out: list[str] = []
    _members(tree.body, lines, out, in_class=False)
    return "\n".join(out)


def _members(body: list[ast.stmt], lines: list[str], out: list[str], *, in_class: bool) -> None:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _hidden(node.name, in_class):
                continue
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Name) and decorator.id in _DECORATORS:
                    out.append(_line(lines, decorator.lineno))
            out.extend(_signature(node, lines, stub=True))
        elif isinstance(node, ast.ClassDef):
            out.extend(_signature(node, lines, stub=False))
            before = len(out)
            _members(node.body, lines, out, in_class=True)
            if len(out) == before:
                out[-1] += " ..."
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and not _hidden(t.id, in_class) for t in targets):
                out.append(_line(lines, node.lineno)[:_MAX_LINE])
        elif isinstance(node, (ast.If, ast.Try)) and not in_class:  # platform-dependent definitions
            _members(node.body, lines, out, in_class=False)


def _hidden(name: str, in_class: bool) -> bool:
    """Dunder members other than `__init__` say nothing a caller needs."""
    return in_class and name.startswith("__") and name.endswith("__") and name != "__init__"


def _line(lines: list[str], lineno: int) -> str:
    return lines[lineno - 1].rstrip() if 0 < lineno <= len(lines) else ""


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, lines: list[str], *,
               stub: bool) -> list[str]:
    """The header's source lines (a signature may span several), `...` in place of a body."""
    first, last = node.lineno, node.body[0].lineno - 1 if node.body else node.lineno
    if last < first:  # `def f(): return x` on one line
        head = _line(lines, first)
        return [head[: head.index(":") + 1] + " ..." if ":" in head else head]
    header = [_line(lines, n) for n in range(first, last + 1)]
    while header and not header[-1].strip().endswith(":"):  # comments between header and body
        header.pop()
    if not header:
        header = [_line(lines, first)]
    if stub:
        header[-1] += " ..."
    return header
