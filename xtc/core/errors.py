"""User-facing errors.

An `XtcError` is a problem with what the user gave us (a path, a flag, a file); the CLI prints its
message as one line on stderr and exits non-zero, and the server turns it into a single
`window/showMessage`. Anything else is a bug and keeps its traceback.
"""


class XtcError(Exception):
    """A user error with a one-line, actionable message."""
