"""Which files are never sent to a model: defaults.CONTEXT_EXCLUDE plus the user's patterns."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pathspec

from xtc.core import defaults


class Exclusions:
    """gitignore-style patterns compiled once; `.match(path)` says whether a file is excluded."""

    def __init__(self, extra: Iterable[str] = (), root: str | os.PathLike | None = None):
        self.root = os.path.abspath(root) if root is not None else None
        self.spec = pathspec.GitIgnoreSpec.from_lines([*defaults.CONTEXT_EXCLUDE, *extra])

    def match(self, path: str | os.PathLike) -> bool:
        path = os.fspath(path)
        if self.root is not None and os.path.isabs(path):
            rel = os.path.relpath(path, self.root)
            # Outside the root: match by the file's own name and folders, not by a "../" path.
            path = rel if not rel.startswith("..") else path
        return self.spec.match_file(path.replace(os.sep, "/").lstrip("/"))


def is_excluded(path: str | os.PathLike, root: str | os.PathLike | None = None,
                extra: Iterable[str] = ()) -> bool:
    return Exclusions(extra, root).match(path)
