"""A storm of editor traffic against the real `xtc-lsp` over stdio: is every request answered,
is no answer stale, does memory stay bounded, does the server shut down cleanly?

    python benchmarks/lsp_storm.py [--model SRC] [--keystrokes 5000] [--documents 20] [--json]

Each keystroke is a `didChange` (one character typed at the end of a document, the characters
taken from a real Python file) and an inline-completion request; every third request is
cancelled (`$/cancelRequest`) right after it is sent, and every fifth is followed by one more
character with no request (so that its answer, unless it is back first, is outdated by an edit
and not by a newer request). Along the way: documents are closed (one
request while closed) and reopened, edits land past the end of a document (the document is then
resynced with a full change), one document gets a 10 MB full change (and later its text back),
and two requests go to `untitled:` URIs (one opened, one never opened). Nothing waits for an
answer until the last keystroke is sent.

An answer is *stale* when it is not empty although the server had already read a newer version
of its document (or the document's close): the client knows that when an answer to a request
sent after that change came back first (the server reads messages in order). Not a test: prints
a table, or JSON; `tests/test_lsp_storm.py` runs it small on a tiny model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sysconfig
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled

from lsp_server.client import Client, end_of, server_command

SOURCE = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"  # what the "user" types
AFTER = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return [line.rstrip() for line in "


def rss_kib(pid: int | None, field: str = "VmRSS") -> int | None:
    """A field of /proc/PID/status in KiB (VmRSS: resident now, VmHWM: its peak); None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def is_empty(result: Any) -> bool:
    items = result.items if isinstance(result, t.InlineCompletionList) else result
    return not items


class Storm:
    """The client's side of the storm: documents as the client has them, every request sent
    and what became of it."""

    def __init__(self, client: Client, rng: random.Random, typed: str):
        self.client = client
        self.rng = rng
        self.typed = typed
        self.seq = 0  # every message sent that matters here, numbered
        self.texts: dict[str, str] = {}  # uri -> text, for the open documents
        self.typing: dict[str, int] = {}  # uri -> where in `typed` its next character comes from
        self.versions: dict[str, int] = {}
        self.state: dict[str, int] = {}  # uri -> seq of the message that made its current text (or close)
        self.superseded: dict[int, int] = {}  # state -> seq of the message that replaced it
        self.closed_states: set[int] = set()
        self.futures: list[Future] = []
        self.sent = self.cancel_sent = 0
        self.answered = self.cancelled = self.stale = self.late = self.suggestions = 0
        self.errors: list[str] = []
        self.newest_answered = -1  # the highest seq whose answer has come back

    def _next(self, uri: str, closed: bool = False) -> None:
        self.seq += 1
        if uri in self.state:
            self.superseded[self.state[uri]] = self.seq
        self.state[uri] = self.seq
        if closed:
            self.closed_states.add(self.seq)

    # -- documents ---------------------------------------------------------------------------
    def open(self, uri: str, text: str) -> None:
        self.versions[uri] = self.versions.get(uri, 0) + 1  # LSP allows any version; keep counting
        self.texts[uri] = text
        self._next(uri)
        self.client.text_document_did_open(t.DidOpenTextDocumentParams(
            t.TextDocumentItem(uri, "python", self.versions[uri], text)))

    def close(self, uri: str) -> None:
        del self.texts[uri]
        self._next(uri, closed=True)
        self.client.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(uri)))

    def _change(self, uri: str, change: Any) -> None:
        self.versions[uri] += 1
        self._next(uri)
        self.client.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]), [change]))

    def type_char(self, uri: str) -> None:
        text = self.texts[uri]
        at = self.typing.get(uri, 0) % len(self.typed)
        char, self.typing[uri] = self.typed[at], at + 1
        self.texts[uri] = text + char
        self._change(uri, t.TextDocumentContentChangePartial(range=t.Range(end_of(text), end_of(text)), text=char))

    def replace_all(self, uri: str, text: str) -> None:
        self.texts[uri] = text
        self._change(uri, t.TextDocumentContentChangeWholeDocument(text=text))

    def edit_past_end(self, uri: str) -> None:
        """An edit three lines past the end (a confused client); then the full text again, since
        servers may drop, clamp or append such an edit."""
        line = self.texts[uri].count("\n") + 3
        position = t.Position(line, 5)
        self._change(uri, t.TextDocumentContentChangePartial(range=t.Range(position, position), text="x"))
        self.replace_all(uri, self.texts[uri])

    # -- requests ----------------------------------------------------------------------------
    def request(self, uri: str, cancel: bool = False) -> None:
        self.seq += 1
        seq, state, msg_id = self.seq, self.state.get(uri, -1), f"storm-{self.seq}"
        position = end_of(self.texts.get(uri, ""))
        future = self.client.protocol.send_request(t.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                   Client.inline_params(uri, position), msg_id=msg_id)
        future.add_done_callback(lambda f: self._answered(f, seq, state))  # runs as each answer is read
        self.futures.append(future)
        self.sent += 1
        if cancel:
            self.client.cancel_request(t.CancelParams(id=msg_id))
            self.cancel_sent += 1

    def _answered(self, future: Future, seq: int, state: int) -> None:
        if future.cancelled():  # cancelled here, not by the server: says nothing of what it read
            return
        error = future.exception()
        if isinstance(error, JsonRpcRequestCancelled):
            self.cancelled += 1
        elif error is not None:
            self.errors.append(f"{type(error).__name__}: {error}"[:200])
        else:
            self.answered += 1
            if not is_empty(future.result()):
                self.suggestions += 1
                replaced = self.superseded.get(state)
                if state in self.closed_states or (replaced is not None and replaced < self.newest_answered):
                    self.stale += 1  # the server had read the newer text before it answered this
                elif replaced is not None:
                    self.late += 1  # the change was on its way when the server answered: not a fault
        if error is None or isinstance(error, JsonRpcException):  # the server's answer: it read this request
            self.newest_answered = max(self.newest_answered, seq)


def document_start(typed: str, i: int) -> tuple[str, int]:
    """A document's first text, a few lines of the typed source (each document elsewhere), and
    where typing it goes on."""
    start = (i * 7919) % max(1, len(typed) - 400)
    return f"# document {i}\n" + typed[start:start + 300], start + 300


async def storm(keystrokes: int = 5000, documents: int = 20, model: str = "", *, command: list[str] | None = None,
                env: dict[str, str] | None = None, seed: int = 0, big_mb: float = 10, interval_ms: float = 0,
                timeout: float = 600) -> dict:
    """Run the storm against a fresh server; the figures as a dict (see the module's docstring)."""
    rng = random.Random(seed)
    typed = SOURCE.read_text()
    client = Client(timeout=timeout, name="xtc-lsp-storm")
    started = time.perf_counter()
    await client.start(command or server_command(), env=env)
    peak = [0]
    sampling = True

    async def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], rss_kib(client.pid) or 0)
            await asyncio.sleep(0.05)

    sampler = None
    try:
        await client.initialize({"xtc": {"model": model}})
        await client.wait_ready(timeout=timeout)
        if client.messages:
            raise SystemExit(f"server: {client.messages[0].message}")
        ready = time.perf_counter()
        rss_start = rss_kib(client.pid)
        sampler = asyncio.create_task(sample())
        s = Storm(client, rng, typed)
        uris = [f"file:///storm/doc{i}.py" for i in range(documents)]
        for i, uri in enumerate(uris):
            text, s.typing[uri] = document_start(typed, i)
            s.open(uri, text)
        big_uri = uris[rng.randrange(documents)]
        big_at, big_undo_at = keystrokes // 2, keystrokes // 2 + max(1, keystrokes // 20)
        small_text, quiet, timeline = "", 0, []
        for k in range(keystrokes):
            uri = rng.choice([u for u in uris if u in s.texts])
            if k % max(1, keystrokes // 10) == 0:
                timeline.append(rss_kib(client.pid))
            if k == big_at:  # a 10 MB paste, as one full change, and a request on it
                small_text = s.texts[big_uri]
                line = "value = compute(alpha, beta, gamma)  # a long pasted file\n"
                s.replace_all(big_uri, line * int(big_mb * 2**20 / len(line)))
                s.request(big_uri)
            elif k == big_undo_at and big_uri in s.texts:
                s.replace_all(big_uri, small_text)
            if k == keystrokes // 4:  # not a file: an untitled buffer, and one never opened
                s.open("untitled:Untitled-1", "import os\n\ndef main():\n    os.pa")
                s.request("untitled:Untitled-1")
                s.request("untitled:Untitled-2")
            if k % 50 == 25 and len(s.texts) > 1:  # close a document, ask once while closed, reopen
                closing = rng.choice([u for u in uris if u in s.texts and u != uri])
                text = s.texts[closing]
                s.close(closing)
                s.request(closing)
                s.open(closing, text)
            if k % 97 == 40:
                s.edit_past_end(uri)
            s.type_char(uri)
            s.request(uri, cancel=k % 3 == 0)
            if k % 5 == 2:  # and one more character with no request: the answer above is then outdated
                s.type_char(uri)
                quiet += 1
            await asyncio.sleep(interval_ms / 1000)  # 0: let the loop write, as fast as it goes
        sent_at = time.perf_counter()
        done = asyncio.gather(*(asyncio.wrap_future(f) for f in s.futures), return_exceptions=True)
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            pass
        unanswered = sum(not f.done() for f in s.futures)
        drained = time.perf_counter()
        # and then a plain request on a new document, awaited: the server still serves
        s.open("file:///storm/after.py", AFTER)
        after = await client.suggestion("file:///storm/after.py", end_of(AFTER), timeout=timeout)
        rss_end, rss_hwm = rss_kib(client.pid), rss_kib(client.pid, "VmHWM")
    finally:
        sampling = False
        if sampler is not None:
            await sampler
        returncode = await client.close()
    mib = lambda kib: None if kib is None else round(kib / 1024, 1)  # noqa: E731
    return {
        "model": model or "(installed default)",
        "keystrokes": keystrokes,
        "documents": documents,
        "edits_without_request": quiet,
        "requests_sent": s.sent,
        "answered": s.answered,
        "non_empty_answers": s.suggestions,
        "cancelled": s.cancelled,
        "cancel_sent": s.cancel_sent,
        "errors": len(s.errors),
        "error_samples": s.errors[:3],
        "unanswered": unanswered,
        "stale_answers": s.stale,
        "late_answers": s.late,
        "suggestion_after_storm": bool(after),
        "rss_mib": {"start": mib(rss_start), "peak": mib(max(peak[0], rss_end or 0)), "end": mib(rss_end),
                    "lifetime_peak": mib(rss_hwm), "every_tenth_of_the_keystrokes": [mib(x) for x in timeline]},
        "seconds": {"start_to_ready": round(ready - started, 2), "sending": round(sent_at - ready, 2),
                    "sent_to_all_answered": round(drained - sent_at, 2),
                    "total": round(time.perf_counter() - started, 2)},
        "exit_status": returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model SRC (default: the installed default)")
    parser.add_argument("--keystrokes", type=int, default=5000)
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--interval-ms", type=float, default=0, help="pause after each keystroke (default none)")
    parser.add_argument("--big-mb", type=float, default=10, help="size of the one large full change")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.keystrokes < 1 or args.documents < 2:
        parser.error("--keystrokes must be >= 1 and --documents >= 2")
    r = asyncio.run(storm(args.keystrokes, args.documents, args.model, seed=args.seed, big_mb=args.big_mb,
                          interval_ms=args.interval_ms, timeout=args.timeout))
    if args.json:
        print(json.dumps(r))
        return
    rss, sec = r["rss_mib"], r["seconds"]
    print(f"xtc-lsp storm, model {r['model']}: {r['keystrokes']} keystrokes over {r['documents']} documents")
    for name, value in (
            ("requests sent", r["requests_sent"]),
            ("answered (not empty) / cancelled / errors / unanswered",
             f"{r['answered']} ({r['non_empty_answers']}) / {r['cancelled']} / {r['errors']} / {r['unanswered']}"),
            ("stale answers (late, not a fault)", f"{r['stale_answers']} ({r['late_answers']})"),
            ("suggestion after the storm", "yes" if r["suggestion_after_storm"] else "no"),
            ("server RSS start / peak / end (MiB)", f"{rss['start']} / {rss['peak']} / {rss['end']}"),
            ("ready / sending / draining / total (s)",
             f"{sec['start_to_ready']} / {sec['sending']} / {sec['sent_to_all_answered']} / {sec['total']}"),
            ("exit status", r["exit_status"])):
        print(f"  {name:56} {value}")


if __name__ == "__main__":
    main()
