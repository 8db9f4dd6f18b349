"""`xtc-lsp`: inline code completion from a local xtc model over the Language Server Protocol."""

__version__ = "0.1.0"
