"""Workspace context: the one code path from a workspace to the text ahead of the current file,
used by `xtc eval --workspace` and by the language server alike.

The block is re-ranked only when the complete lines before the cursor's line change, so while
the user types within a line the block stays byte-identical and the KV cache keeps it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from xtc.core import defaults
from xtc.infer.context.index import WorkspaceIndex
from xtc.infer.context.layout import FILE_SEP, LAYOUTS, REPO_NAME, block_text, snippet_text
from xtc.infer.context.members import MemberNames
from xtc.infer.context.outline import outline
from xtc.infer.context.references import ModuleMap, attribute_bases, referenced_files
from xtc.infer.context.retrieve import RETRIEVERS, rank
from xtc.infer.context.walk import WalkStats, workspace_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """The text placed ahead of the current file; `names_file`: it ends with the current file's own
    header (the `repo` layout's `<file_sep>PATH`), so the completer adds none of its own;
    `members`: the names a workspace module offers when the cursor is right after `module.` or
    `module` (`xtc.infer.context.members`), None when unknown."""

    text: str = ""
    names_file: bool = False
    snippets: int = 0
    members: frozenset[str] | None = None


def query_lines(before: str, lines: int = defaults.CONTEXT_QUERY_LINES) -> str:
    """The complete lines before the cursor's line: what ranks the snippets. The cursor's own line
    is left out so that typing within it never changes the ranking."""
    head = before.rsplit("\n", 1)[0] if "\n" in before else ""
    return "\n".join(head.split("\n")[-lines:])


class Workspace:
    """An index of workspace files and open documents, ranked and laid out for one tokenizer."""

    def __init__(self, tokenizer, *, budget: int = defaults.WORKSPACE_CONTEXT_TOKENS,
                 retriever: str = defaults.CONTEXT_RETRIEVER, layout: str = defaults.CONTEXT_LAYOUT,
                 repo_name: str = "", index: WorkspaceIndex | None = None,
                 outlines: float = defaults.CONTEXT_OUTLINE_SHARE,
                 member_names: bool = defaults.CONTEXT_MEMBER_NAMES):
        if retriever not in RETRIEVERS:
            raise ValueError(f"retriever {retriever!r}: expected one of {', '.join(RETRIEVERS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
        self.tokenizer = tokenizer
        self.index = index if index is not None else WorkspaceIndex()
        self.budget, self.retriever, self.repo_name = budget, retriever, repo_name
        self.outline_budget = int(budget * outlines)
        self.layout = layout if layout == "comment" or self._has_repo_tokens() else "comment"
        self._cache: dict[str, tuple[tuple, Context]] = {}  # path -> (key, block)
        self._modules: tuple[int, ModuleMap] = (-1, ModuleMap(()))
        self._outlines: dict[str, tuple[str, list[str], list[int]]] = {}  # path -> (text, lines, tokens)
        self._lock = threading.Lock()
        self.members = MemberNames(self.index.text, self._module_map) if member_names else None

    def _has_repo_tokens(self) -> bool:
        vocab = getattr(self.tokenizer, "all_special_tokens", []) or []
        added = {t.content for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()}
        return all(t in vocab or t in added for t in (REPO_NAME, FILE_SEP))

    def _tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context(self, path: str, before: str) -> Context:
        """The block for a cursor in `path` with `before` the text ahead of it. It changes only
        when the lines above the cursor change or a new module is named on the cursor's line."""
        block = self._block(path, before)
        members = self.members.at(before, path) if self.members is not None else None
        return replace(block, members=members) if members else block

    def _block(self, path: str, before: str) -> Context:
        if self.budget <= 0:
            return Context()
        query = query_lines(before)
        key = (query, tuple(attribute_bases(before.rsplit("\n", 1)[-1])))
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
        block = self._assemble(path, query, before)
        with self._lock:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[path] = (key, block)
        return block

    def _assemble(self, path: str, query: str, before: str) -> Context:
        ranked = rank(self.index, query, exclude_path=path, retriever=self.retriever)
        named = self._named_outlines(path, before) if self.outline_budget > 0 else []
        overhead = self._tokens(block_text(["x"], path, self.layout, self.repo_name)) if ranked or named else 0
        used = overhead + sum(cost for _, cost in named)
        chosen = []
        for _score, window in ranked:  # best first, while they fit
            if any(w.path == window.path and abs(w.start - window.start) < len(window.text.split("\n"))
                   for w, _ in chosen):
                continue  # overlaps a better window of the same file
            text = snippet_text(window.path, window.text, self.layout, path)
            cost = self._tokens(text)
            if used + cost > self.budget:
                continue
            chosen.append((window, text))
            used += cost
        # The best snippet goes last, nearest the cursor; the outline of the module the cursor's
        # line names after all of them.
        snippets = [t for _, t in reversed(chosen)] + [t for t, _ in reversed(named)]
        text = block_text(snippets, path, self.layout, self.repo_name)
        return Context(text, names_file=bool(text) and self.layout == "repo", snippets=len(snippets))

    def _named_outlines(self, path: str, before: str) -> list[tuple[str, int]]:
        """(snippet, tokens) of the outlines of the modules named in front of a dot near the
        cursor, the nearest first, cut to fit `outline_budget` together."""
        files = referenced_files(before, path, self._module_map(), query_lines=defaults.CONTEXT_QUERY_LINES,
                                 limit=defaults.CONTEXT_OUTLINES)
        room, named = self.outline_budget, []
        for file in files:
            lines, costs = self._outline(file)
            header = self._tokens(snippet_text(file, "", self.layout, path))
            keep, cost = 0, header
            while keep < len(lines) and cost + costs[keep] <= room:
                cost += costs[keep]
                keep += 1
            if keep:
                named.append((snippet_text(file, "\n".join(lines[:keep]), self.layout, path), cost))
                room -= cost
        return named

    def _module_map(self) -> ModuleMap:
        changed = self.index.paths_changed
        if self._modules[0] != changed:
            self._modules = (changed, ModuleMap(self.index.paths()))
        return self._modules[1]

    def _outline(self, path: str) -> tuple[list[str], list[int]]:
        """The outline's lines and each line's tokens, cached while the file's text stays."""
        text = self.index.text(path) or ""
        cached = self._outlines.get(path)
        if cached is None or cached[0] != text:
            lines = [line for line in outline(text, path).split("\n") if line]
            if len(self._outlines) > 256:
                self._outlines.clear()
            cached = self._outlines[path] = (text, lines, [self._tokens(line + "\n") for line in lines])
        return cached[1], cached[2]

    # -- what the index holds --------------------------------------------------------------------
    def set_document(self, path: str, text: str) -> None:
        self.index.set_document(path, text)
        self.forget(path)

    def remove(self, path: str) -> None:
        self.index.remove(path)

    def forget(self, path: str | None = None) -> None:
        """Drop cached blocks (all, or the one of `path`): the next request re-ranks."""
        with self._lock:
            if path is None:
                self._cache.clear()
            else:
                self._cache.pop(path, None)

    def add_folder(self, root: Path, *, prefix: str = "", excluded: Callable[[str], bool] | None = None,
                   should_stop: Callable[[], bool] | None = None, **bounds) -> WalkStats:
        """Index every file worth it under `root` (paths `prefix` + relative path); returns counts."""
        started, stats = time.perf_counter(), WalkStats()
        for rel, text in workspace_files(Path(root), excluded=excluded, stats=stats, should_stop=should_stop, **bounds):
            self.index.set_document(prefix + rel, text)
        self.forget()
        log.info("workspace context: indexed %d files (%.1f MB) of %s in %.1f s; skipped %s", stats.files,
                 stats.bytes / 1e6, root, time.perf_counter() - started, stats.skipped or "none")
        return stats
