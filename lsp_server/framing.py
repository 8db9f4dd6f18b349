"""Reading LSP's `Content-Length` framing from stdin so that one badly framed message costs that
message (and at most the next), not the session. pygls reads a header line only when it is whole;
after a body whose length was miscounted (a client counting characters, not bytes, of non-ASCII
text), the next header arrives glued to the leftover bytes, as does every header after it, and
the server never answers again. Here a line holding a header after junk starts at the header."""

from __future__ import annotations

from typing import BinaryIO

HEADER = b"Content-Length:"


class ResyncingInput:
    """The parts of a binary stream pygls' stdio reader calls (`readline`, `read`)."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream

    def readline(self) -> bytes:
        line = self.stream.readline()
        at = line.rfind(HEADER)
        return line[at:] if at > 0 else line

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)
