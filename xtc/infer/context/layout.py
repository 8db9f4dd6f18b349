"""How retrieved snippets are laid out ahead of the current file, in a form the model has seen:

- `repo`: StarCoder's repository format, `<repo_name>NAME<file_sep>PATH\\nCODE...<file_sep>PATH\\n`
  and then the current file (SmolLM2's vocabulary holds those tokens);
- `comment`: Copilot's, each snippet as comment lines under `Compare this snippet from PATH:`,
  for any model.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xtc.core import defaults

LAYOUTS = defaults.CONTEXT_LAYOUTS
REPO_NAME, FILE_SEP = "<repo_name>", "<file_sep>"

_SLASHES = frozenset(".js .jsx .mjs .cjs .ts .tsx .go .rs .java .kt .kts .swift .c .h .cc .cpp .cxx .hpp .hh .cs .php "
                     ".scss .proto .vue".split())
_DASHES = frozenset({".lua", ".sql"})


def comment_prefix(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return "//" if suffix in _SLASHES else "--" if suffix in _DASHES else "#"


def snippet_text(path: str, code: str, layout: str, current_path: str) -> str:
    """One snippet as it appears in the prompt (`current_path` picks the comment syntax)."""
    if layout == "repo":
        return f"{FILE_SEP}{path}\n{code}\n"
    mark = comment_prefix(current_path)
    return f"{mark} Compare this snippet from {path}:\n" + "".join(f"{mark} {line}".rstrip() + "\n"
                                                                   for line in code.split("\n"))


def block_text(snippets: list[str], current_path: str, layout: str, repo_name: str = "") -> str:
    """The text ahead of the current file: the snippets in order and, in the `repo` layout, the
    current file's own `<file_sep>PATH` line. Empty without snippets (the prompt is then exactly
    the one without workspace context)."""
    if not snippets:
        return ""
    if layout == "repo":
        return f"{REPO_NAME}{repo_name}" + "".join(snippets) + f"{FILE_SEP}{current_path}\n"
    return "".join(snippets)
