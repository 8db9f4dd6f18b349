"""Where the server's workspace context comes from: the open documents (as the editor has them,
unsaved edits included) and the files of the workspace folders, indexed on a background thread
so that a completion never waits for the index. Retrieval and layout are `xtc.infer.context`'s,
the same code `xtc eval --workspace` measures."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from xtc.core import defaults
from xtc.core.exclude import Exclusions
from xtc.infer.context.walk import indexable, read_text_file
from xtc.infer.context.workspace import Context, Workspace

log = logging.getLogger("xtc-lsp")


def uri_path(uri: str) -> Path | None:
    """The local path of a `file:` URI (None for `untitled:` and other schemes)."""
    parts = urlsplit(uri)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


@functools.lru_cache(maxsize=8)
def _exclusions(extra: tuple[str, ...]) -> Exclusions:
    return Exclusions(extra)


class WorkspaceSources:
    """Open documents and workspace folders, fed into one `Workspace` per loaded tokenizer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: list[Path] = []
        self._documents: dict[str, str] = {}  # uri -> text
        self._dirty: set[str] = set()  # open documents changed since they were indexed
        self._workspace: Workspace | None = None
        self._generation = 0  # a new tokenizer or folder set stops an older background walk
        self._on_disk: list[tuple[str, bool]] = []  # (uri, deleted): files changed on disk, not yet re-read
        self._reading = False  # a thread is re-reading them
        self.enabled = defaults.WORKSPACE_CONTEXT
        self.exclude: tuple[str, ...] = ()

    # -- what the editor tells us ----------------------------------------------------------------
    def set_folders(self, uris: list[str]) -> None:
        folders = [p for p in map(uri_path, uris) if p is not None]
        with self._lock:
            if folders == self._folders:
                return
            self._folders = folders
        self._reindex()

    def open(self, uri: str, text: str) -> None:
        with self._lock:
            self._documents[uri] = text
            self._dirty.add(uri)

    def close(self, uri: str) -> None:
        """A closed document stays in the index as its file on disk (if it is in a folder)."""
        with self._lock:
            self._documents.pop(uri, None)
            self._dirty.discard(uri)

    def files_changed(self, changes: list[tuple[str, bool]]) -> None:
        """Files saved, created, changed or deleted (`True`) on disk: re-read into the index, or
        dropped from it, on a background thread in the order told (a checkout may touch thousands)."""
        with self._lock:
            self._on_disk.extend(changes)
            if self._reading or not changes:
                return
            self._reading = True
        threading.Thread(target=self._reread, name="xtc-files", daemon=True).start()

    def _reread(self) -> None:
        while True:
            with self._lock:
                if not self._on_disk:
                    self._reading = False
                    return
                changes, self._on_disk = self._on_disk, []
                workspace, folders, open_now = self._workspace, list(self._folders), set(self._documents)
            if workspace is None or not self.enabled:
                continue  # the next walk of the folders reads them all anyway
            try:
                for uri, deleted in changes:
                    self._reread_one(workspace, folders, uri, deleted, open_now)
            except Exception:  # a bug here must not take the server down
                log.exception("workspace context: re-reading changed files failed")
            workspace.forget()  # blocks that quoted the old text are assembled anew

    def _reread_one(self, workspace: Workspace, folders: list[Path], uri: str, deleted: bool, open_now: set) -> None:
        path = uri_path(uri)
        folder = next((f for f in folders if path is not None and path.is_relative_to(f)), None)
        if folder is None or uri in open_now:  # outside the folders, or the editor's copy wins
            return
        rel = path.relative_to(folder).as_posix()
        name = self.name(uri)
        text = None
        if not deleted and indexable(folder, rel, excluded=self.excluded):
            text, _ = read_text_file(path)  # None: gone again, too big, binary
        if text is None:  # a deleted folder takes its files with it
            for gone in [name] + [p for p in workspace.index.paths() if p.startswith(name + "/")]:
                workspace.remove(gone)
        else:
            workspace.set_document(name, text)

    def configure(self, enabled: bool, exclude: tuple[str, ...]) -> None:
        changed = (enabled, exclude) != (self.enabled, self.exclude)
        self.enabled, self.exclude = enabled, exclude
        if changed:
            self._reindex()

    def use_tokenizer(self, tokenizer) -> None:
        """A model was loaded: snippets are measured in its tokens and laid out for its vocabulary."""
        with self._lock:
            self._workspace = Workspace(tokenizer, repo_name=self._folders[0].name if self._folders else "")
            self._dirty |= set(self._documents)
        self._reindex()

    # -- what a completion asks -------------------------------------------------------------------
    def name(self, uri: str) -> str:
        """The document's path relative to its workspace folder (its whole path outside them)."""
        path = uri_path(uri)
        if path is None:
            return uri
        for folder in self._folders:
            try:
                return path.relative_to(folder).as_posix()
            except ValueError:
                continue
        return path.as_posix()

    def context(self, uri: str, before: str) -> Context | None:
        workspace = self._workspace
        if not self.enabled or workspace is None or self.excluded(self.name(uri)):
            return None
        with self._lock:
            dirty = [(u, self._documents[u]) for u in self._dirty if u in self._documents]
            self._dirty.clear()
        for u, text in dirty:  # a huge buffer (a log, a data dump) is not worth indexing on every edit
            if len(text) <= defaults.CONTEXT_MAX_FILE_BYTES and not self.excluded(self.name(u)):
                workspace.set_document(self.name(u), text)
        return workspace.context(self.name(uri), before)

    def excluded(self, name: str) -> bool:
        """Files never given to the model: the default secrets list and `contextExclude`."""
        return _exclusions(tuple(self.exclude)).match(name)

    # -- the background index ---------------------------------------------------------------------
    def _reindex(self) -> None:
        with self._lock:
            self._generation += 1
            generation, workspace, folders = self._generation, self._workspace, list(self._folders)
        if workspace is None or not self.enabled or not folders:
            return

        def walk() -> None:
            for folder in folders:
                try:
                    workspace.add_folder(folder, excluded=self.excluded,
                                         should_stop=lambda: generation != self._generation)
                except Exception:  # a bug in the walk must not take the server down
                    log.exception("workspace context: indexing %s failed", folder)
            with self._lock:  # the editor's copies of open documents win over the files on disk
                self._dirty |= set(self._documents)

        threading.Thread(target=walk, name="xtc-index", daemon=True).start()
