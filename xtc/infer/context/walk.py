"""Which files of a workspace folder are worth indexing: source text, bounded in count and size,
never inside VCS folders, virtual environments, dependency trees, or what .gitignore ignores."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xtc.core import defaults

log = logging.getLogger(__name__)

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".nox",
                          ".mypy_cache", ".pytest_cache", ".ruff_cache", "site-packages", "dist-packages", "build",
                          "dist", ".eggs", "target", ".idea", ".vscode"})
#: Source and text files whose code can help complete another file.
CODE_SUFFIXES = frozenset(
    ".py .pyi .js .jsx .mjs .cjs .ts .tsx .go .rs .java .kt .kts .swift .c .h .cc .cpp .cxx .hpp .hh .cs .rb .php .lua "
    ".pl .pm .r .sh .bash .zsh .ps1 .sql .html .css .scss .toml .yaml .yml .json .md .rst .cfg .ini .proto .vue".split())


@dataclass
class WalkStats:
    files: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


class GitIgnores:
    """The .gitignore files of a folder tree, applied as git does: each file's patterns relative
    to its own folder, and the deepest file with a matching pattern decides (so a subfolder's `!`
    re-includes what a file above ignored). Folders are read as they are first asked about."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._specs: dict[str, object | None] = {}  # folder relative to root ("" for root) -> its spec

    def _spec(self, folder: str):
        if folder not in self._specs:
            import pathspec

            try:
                text = (self.root / folder / ".gitignore").read_text(encoding="utf-8", errors="replace")
                self._specs[folder] = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
            except OSError:
                self._specs[folder] = None
        return self._specs[folder]

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Whether git ignores `rel` (posix, relative to the root), its parent folders aside."""
        parts = rel.split("/")
        for depth in range(len(parts) - 1, -1, -1):  # the deepest .gitignore first
            folder = "/".join(parts[:depth])
            spec = self._spec(folder)
            if spec is not None:
                result = spec.check_file("/".join(parts[depth:]) + ("/" if is_dir else ""))
                if result.include is not None:
                    return bool(result.include)
        return False


def _skipped_folder(here: Path, name: str) -> bool:
    """VCS folders, virtual environments, dependency and build trees: never the user's source."""
    return name in SKIPPED_DIRS or name.startswith(".") or name.endswith(".egg-info") \
        or (here / name / "pyvenv.cfg").exists()


def indexable(root: Path, rel: str, excluded: Callable[[str], bool] | None = None) -> bool:
    """Whether the walk of `root` would index the file `rel` (posix, relative to `root`), its
    size and encoding aside: for one file that changed on disk, without walking the folder."""
    root, gitignores = Path(root), GitIgnores(root)
    parts = rel.split("/")
    if not parts[-1] or ".." in parts:
        return False
    for depth in range(1, len(parts)):
        folder, here = "/".join(parts[:depth]), root.joinpath(*parts[:depth - 1])
        if _skipped_folder(here, parts[depth - 1]) or (here / parts[depth - 1]).is_symlink() \
                or gitignores.ignored(folder, is_dir=True) or (excluded is not None and excluded(folder + "/")):
            return False
    path = root.joinpath(*parts)
    return Path(rel).suffix.lower() in CODE_SUFFIXES and not path.is_symlink() and not gitignores.ignored(rel) \
        and not (excluded is not None and excluded(rel))


def read_text_file(path: Path, max_bytes: int = defaults.CONTEXT_MAX_FILE_BYTES) -> tuple[str | None, str]:
    """(text, "") or (None, why it is skipped): too big, unreadable, binary or not UTF-8."""
    try:
        if path.stat().st_size > max_bytes:
            return None, "too big"
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if len(data) > max_bytes:  # grew since stat
        return None, "too big"
    if b"\0" in data[:8192]:
        return None, "binary"
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n"), ""
    except UnicodeDecodeError:
        return None, "not UTF-8"


def workspace_files(root: Path, *, excluded: Callable[[str], bool] | None = None,
                    max_files: int = defaults.CONTEXT_MAX_FILES, max_file_bytes: int = defaults.CONTEXT_MAX_FILE_BYTES,
                    stats: WalkStats | None = None, should_stop: Callable[[], bool] | None = None,
                    ) -> Iterator[tuple[str, str]]:
    """(path relative to `root`, text) of the files worth indexing, in sorted order, at most
    `max_files`. Symlinks are not followed (no loops, nothing outside the folder); `excluded`
    takes a relative path (e.g. the user's `contextExclude` and the default secrets list)."""
    stats = stats if stats is not None else WalkStats()
    root = Path(root)
    gitignores = GitIgnores(root)
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda exc: stats.skip("unreadable folder")):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        keep = []
        for d in sorted(dirnames):
            rel = d if rel_dir == "." else f"{rel_dir}/{d}"
            if _skipped_folder(here, d):
                stats.skip("skipped folder")
            elif (here / d).is_symlink() or gitignores.ignored(rel, is_dir=True) \
                    or (excluded is not None and excluded(rel + "/")):
                stats.skip("ignored folder")
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if should_stop is not None and should_stop():
                return
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = here / name
            if Path(name).suffix.lower() not in CODE_SUFFIXES or path.is_symlink():
                stats.skip("not source")
                continue
            if gitignores.ignored(rel) or (excluded is not None and excluded(rel)):
                stats.skip("ignored")
                continue
            if stats.files >= max_files:
                log.info("workspace context: %s has more than %d files; the rest are not indexed", root, max_files)
                return
            text, why = read_text_file(path, max_file_bytes)
            if text is None:
                stats.skip(why)
                continue
            stats.files += 1
            stats.bytes += len(text)
            yield rel, text
