"""A benchmark item completed the way the editor completes it: the same `Completer` and, with a
workspace, the same `Workspace` retrieval as the language server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

from xtc.core import defaults
from xtc.core.errors import XtcError
from xtc.infer.complete import Completer, Completion
from xtc.infer.context.workspace import Workspace


def open_workspace(completer: Completer, root: Path, items: list[dict], *,
                   budget: int = defaults.WORKSPACE_CONTEXT_TOKENS, retriever: str = defaults.CONTEXT_RETRIEVER,
                   layout: str = defaults.CONTEXT_LAYOUT,
                   outlines: float = defaults.CONTEXT_OUTLINE_SHARE,
                   member_names: bool = defaults.CONTEXT_MEMBER_NAMES) -> tuple[Workspace, dict]:
    """The workspace rooted at `root`, indexed, and a description of it for the result. Every item
    must name its file (`path`, relative to `root`)."""
    root = Path(root)
    if not root.is_dir():
        raise XtcError(f"--workspace {root}: no such directory")
    for number, item in enumerate(items, start=1):
        path = item.get("path")
        if not path:
            raise XtcError(f"item {number} has no \"path\": --workspace needs each item's file")
        if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
            raise XtcError(f"item {number}: \"path\" {path!r} must be relative to the workspace")
    workspace = Workspace(completer.tokenizer, budget=budget, retriever=retriever, layout=layout, repo_name=root.name,
                          outlines=outlines, member_names=member_names)
    stats = workspace.add_folder(root)
    described = {"workspace": str(root), "files": stats.files, "windows": len(workspace.index),
                 "tokens": budget, "retriever": retriever, "layout": workspace.layout, "outlines": outlines,
                 "member_names": member_names}
    return workspace, described


def editor_completion(completer: Completer, workspace: Workspace | None = None,
                      **options) -> Callable[[str, str, str], Completion]:
    """`complete_fn(before, after, path)` for `evaluate`: the item's own file is never read, its
    windows are left out of retrieval (`exclude_path`: they hold the answer)."""

    def complete(before: str, after: str, path: str) -> Completion:
        context = workspace.context(path, before) if workspace is not None else None
        return completer.complete(before, after, filename=path, context=context, **options)

    return complete
