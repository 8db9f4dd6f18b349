"""Workspace context: code from the other files of the workspace, placed ahead of the current
file (walk -> index -> retrieve -> layout, assembled by `workspace.Workspace`)."""
