"""`xtc-lsp [--tcp HOST:PORT]` (also `python -m lsp_server`): stdio by default."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lsp_server import __version__
from xtc.core import defaults


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="xtc-lsp", description=__doc__.splitlines()[0])
    parser.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    parser.add_argument("--stdio", action="store_true", help="use stdio (the default; accepted for editors)")
    parser.add_argument("--log-level", default=os.environ.get(defaults.LSP_LOG_ENV, "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level (default INFO)")
    parser.add_argument("--version", action="version", version=f"xtc-lsp {__version__}")
    args = parser.parse_args(argv)
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not port.isdigit():
            parser.error("--tcp takes HOST:PORT, e.g. 127.0.0.1:2087")

    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="xtc-lsp %(levelname)s %(message)s")
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))

    from lsp_server.server import create_server  # imports torch & co: after argument errors

    server = create_server()
    try:
        if args.tcp:
            server.start_tcp(host or "127.0.0.1", int(port))
        else:
            # The protocol owns stdout: anything else printed (by us, a library, C code) goes to stderr.
            protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
            sys.stdout = sys.stderr
            server.start_io(sys.stdin.buffer, protocol_out)
    except SystemExit:  # pygls' `exit` handler
        pass
    # Nothing to save: skip the interpreter's teardown of torch (seconds) so that editors see the
    # server go at once, with the status LSP asks for (0 after `shutdown`, else 1).
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0 if server.shut_down else 1)


if __name__ == "__main__":
    main()
