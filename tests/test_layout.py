"""The package's shape: what runs in the editor stays small, and imports flow one way.

- `xtc.core` and `xtc.infer` never bring in torch or `xtc.train` when imported;
- no module under them imports `xtc.train`, not even inside a function;
- no import cycles among xtc's modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xtc"
EDITOR_SIDE = ("xtc.core", "xtc.infer")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imported_modules(name: str, tree: ast.AST) -> list[tuple[str, ast.stmt]]:
    """(absolute module name, statement) for every import in `tree`; `from pkg import mod` names
    the submodule when there is one."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package(name) else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((target, node))
            found += [(f"{target}.{alias.name}", node) for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return found


def top_level_imports(name: str) -> set[str]:
    """xtc modules imported when `name` is imported: statements at module level (including
    try/if/with blocks and class bodies), leaving out `if TYPE_CHECKING:` blocks (never executed).
    Importing `a.b.c` also runs `a` and `a.b` first; the module's own packages are not counted
    (they are always initialised before it)."""
    tree = ast.parse(MODULES[name].read_text())

    def statements(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from statements(node.orelse)
            elif isinstance(node, ast.ClassDef):
                yield from statements(node.body)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        yield from statements(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node

    found = set()
    for stmt in statements(tree.body):
        for target, _ in imported_modules(name, stmt):
            # importing a.b.c runs a/__init__ and a.b/__init__ first
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return found - own_packages - {name}


def test_the_modules_are_found():
    assert {"xtc.core.format", "xtc.core.sources", "xtc.infer.runtime", "xtc.train.pack"} <= set(MODULES)


def test_editor_side_imports_neither_torch_nor_train_at_import_time():
    """Imports every module of xtc.core and xtc.infer in a fresh interpreter."""
    names = sorted(n for n in MODULES if n.startswith(EDITOR_SIDE))
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules\n"
            "             if m in ('torch', 'transformers') or m.startswith(('torch.', 'transformers.', 'xtc.train')))\n"
            "print(json.dumps(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == [], "importing xtc.core / xtc.infer brought in these modules"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(EDITOR_SIDE)))
def test_editor_side_never_imports_train(name):
    """Anywhere in the file, inside functions too."""
    tree = ast.parse(MODULES[name].read_text())
    offending = [f"line {stmt.lineno}: {target}" for target, stmt in imported_modules(name, tree)
                 if target == "xtc.train" or target.startswith("xtc.train.")]
    assert not offending, f"{name} imports xtc.train: {offending}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    graph = {name: top_level_imports(name) for name in MODULES}
    assert "xtc.core.format" in graph["xtc.infer.spec"]  # the graph sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_guard_against():
    """The helpers above see imports in functions, relative imports, and cycles."""
    tree = ast.parse("def f():\n    from xtc.train import pack\n    import xtc.train.quant\n")
    targets = {t for t, _ in imported_modules("xtc.infer.runtime", tree)}
    assert {"xtc.train", "xtc.train.pack", "xtc.train.quant"} <= targets
    tree = ast.parse("from ..train import pack\n")
    assert "xtc.train.pack" in {t for t, _ in imported_modules("xtc.infer.runtime", tree)}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "xtc.infer.runtime" in top_level_imports("xtc.infer.complete")
    assert "xtc.infer.runtime" not in top_level_imports("xtc.infer.layers")  # only under TYPE_CHECKING
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_dead_definitions():
    """Every top-level function and class of xtc/ and lsp_server/ is named somewhere besides its
    own definition (its module, another one, the tests, benchmarks, scripts or pyproject.toml):
    code nothing calls goes."""
    import re

    sources = [p for d in ("xtc", "lsp_server", "tests", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")]
    texts = [p.read_text() for p in sources] + [(ROOT / "pyproject.toml").read_text()]
    dead = []
    for path in sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "lsp_server").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                word = re.compile(rf"\b{re.escape(node.name)}\b")
                if sum(len(word.findall(text)) for text in texts) < 2:
                    dead.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not dead, f"defined but never used: {dead}"


def test_bench_times_the_runtime_directly():
    # `xtc bench` times the runtime itself: only eval and the server go through Completer.complete.
    assert "Completer" not in (PACKAGE / "eval" / "speed.py").read_text()
