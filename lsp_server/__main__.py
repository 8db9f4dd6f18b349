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
    parser.add_argument("--tcp", metavar="[HOST:]PORT",
                        help="listen on TCP instead of stdio; loopback (127.0.0.1, ::1, localhost) only, "
                             "without authentication, unless --allow-remote")
    parser.add_argument("--allow-remote", action="store_true",
                        help="let --tcp bind a non-loopback host: anyone who reaches it may use the server")
    parser.add_argument("--stdio", action="store_true", help="use stdio (the default; accepted for editors)")
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    parser.add_argument("--log-level", type=str.upper, choices=levels,
                        default=os.environ.get(defaults.LSP_LOG_ENV, "INFO").upper(),
                        help=f"stderr log level (default INFO, or ${defaults.LSP_LOG_ENV})")
    parser.add_argument("--version", action="version", version=f"xtc-lsp {__version__}")
    args = parser.parse_args(argv)
    if args.log_level not in levels:  # argparse does not check a default against choices
        parser.error(f"{defaults.LSP_LOG_ENV}={args.log_level!r}: choose from {', '.join(levels)}")
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit():
            parser.error("--tcp takes HOST:PORT, e.g. 127.0.0.1:2087")
        if host not in ("127.0.0.1", "::1", "localhost") and not args.allow_remote:
            parser.error(f"--tcp {host}: not a loopback host; add --allow-remote to listen there")

    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="xtc-lsp %(levelname)s %(message)s")
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))

    from lsp_server.server import create_server  # imports torch & co: after argument errors

    server = create_server()
    try:
        if args.tcp:
            server.start_tcp(host, int(port))
        else:
            # The protocol owns stdout: anything else printed (by us, a library, C code) goes to stderr.
            protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
            sys.stdout = sys.stderr
            from lsp_server.framing import ResyncingInput

            server.start_io(ResyncingInput(sys.stdin.buffer), protocol_out)
    except SystemExit:  # pygls' `exit` handler
        pass
    # Nothing to save: skip the interpreter's teardown of torch (seconds) so that editors see the
    # server go at once, with the status LSP asks for (0 after `shutdown`, else 1).
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0 if server.shut_down else 1)


if __name__ == "__main__":
    main()
