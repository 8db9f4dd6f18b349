"""The completion engine behind `xtc-lsp`, usable without the protocol.

It turns (document text, cursor, trigger) into a suggestion: the cursor is clamped into the
document, the text around it goes to `xtc.infer.complete.Completer` on one worker thread, and the
answer comes back as a `concurrent.futures.Future`. Around that one call it keeps an editor
responsive:

- one inference at a time, and a model load (its warm-up included) counts as one: it waits for
  the running completion and the requests behind it wait for the load;
- a newer request on the same stream (document and feature) makes the older ones stale: they are
  answered empty at once and their generation stops between tokens;
- cancelling a request's future stops its generation too (`should_stop`);
- an optional debounce: a request waits `debounce_ms` before it starts, so a burst of typing
  costs one inference;
- a few recent suggestions: typing characters that begin the last suggestion answers the
  remainder without inference;
- the model loads on a background thread; until it is ready, or when it cannot be loaded,
  every request is answered empty.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable
from urllib.parse import unquote, urlsplit

from lsp_server.context import WorkspaceSources
from xtc.core import defaults

log = logging.getLogger("xtc-lsp")

INSTALL_HINT = "run `xtc install smollm2` (or set `xtc.model` to a model directory, .gguf file or installed name)"
_EOL = re.compile(r"\r\n|\r|\n")
_WORD = re.compile(r"\w*$")


# -- settings -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The `xtc` configuration section (camelCase keys on the wire)."""

    model: str = ""  # SRC; empty = the installed default
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    context_tokens: int = defaults.CONTEXT_TOKENS
    multiline: bool = defaults.MULTILINE
    debounce_ms: int = defaults.DEBOUNCE_MS
    workspace_context: bool = defaults.WORKSPACE_CONTEXT
    context_exclude: tuple[str, ...] = ()  # gitignore patterns, on top of defaults.CONTEXT_EXCLUDE

    def updated(self, raw: Any) -> "Settings":
        """These settings with the recognised keys of `raw` applied; bad values are ignored.
        Accepts `{"settings": {"xtc": {...}}}`, `{"settings": {...}}`, `{"xtc": {...}}` or `{...}`."""
        section = section_of(raw)
        changes: dict[str, Any] = {}
        for key in section.keys() - _KEYS.keys():
            if key not in _WARNED_UNKNOWN:  # once per name: clients resend the section on every change
                _WARNED_UNKNOWN.add(key)
                log.warning("ignoring unknown setting xtc.%s", key)
        for key, (name, kind, low, high) in _KEYS.items():
            if key not in section or section[key] is None:
                continue
            value = section[key]
            if kind is bool and isinstance(value, bool):
                changes[name] = value
            elif kind is str and isinstance(value, str):
                changes[name] = value.strip()
            elif kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
                changes[name] = tuple(v.strip() for v in value if v.strip())
            elif (kind is int and isinstance(value, (int, float)) and not isinstance(value, bool)
                  and value == value):  # NaN is a float too: int(nan) raises
                changes[name] = int(min(max(value, low), high))
            else:
                log.warning("ignoring setting xtc.%s=%r (expected %s)", key, value, kind.__name__)
        return replace(self, **changes)


_KEYS: dict[str, tuple[str, type, int, int]] = {
    "model": ("model", str, 0, 0),
    "maxNewTokens": ("max_new_tokens", int, *defaults.MAX_NEW_TOKENS_BOUNDS),
    "contextTokens": ("context_tokens", int, *defaults.CONTEXT_TOKENS_BOUNDS),
    "multiline": ("multiline", bool, 0, 0),
    "debounceMs": ("debounce_ms", int, *defaults.DEBOUNCE_MS_BOUNDS),
    "workspaceContext": ("workspace_context", bool, 0, 0),
    "contextExclude": ("context_exclude", tuple, 0, 0),
}


_WARNED_UNKNOWN: set[str] = set()


def section_of(raw: Any) -> dict:
    if isinstance(raw, dict) and isinstance(raw.get("settings"), dict):
        raw = raw["settings"]
    if isinstance(raw, dict) and isinstance(raw.get("xtc"), dict):
        raw = raw["xtc"]
    if isinstance(raw, dict):
        return raw
    if raw is not None:
        log.warning("ignoring settings that are not an object: %r", raw)
    return {}


# -- positions ----------------------------------------------------------------------------------
def _units(char: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(char.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return 1
    return 2 if ord(char) > 0xFFFF else 1  # utf-16, the LSP default


def locate(text: str, line: int, character: int, encoding: str = "utf-16") -> tuple[int, int] | None:
    """The string offset of an LSP position and its character clamped to the line's length,
    or None for a position outside the document (negative, or a line past the end)."""
    if line < 0 or character < 0:
        return None
    breaks = list(_EOL.finditer(text))
    if line > len(breaks):
        return None
    start = breaks[line - 1].end() if line else 0
    end = breaks[line].start() if line < len(breaks) else len(text)
    offset, units = start, 0
    while offset < end:
        width = _units(text[offset], encoding)
        if units + width > character:
            break
        units += width
        offset += 1
    return offset, units


def units_of(text: str, encoding: str = "utf-16") -> int:
    return sum(_units(c, encoding) for c in text)


def file_name(uri: str) -> str:
    """The file name of a document URI ("file:///src/app.js" -> "app.js"); "" for a document that
    has none yet (VS Code's "untitled:Untitled-1")."""
    parsed = urlsplit(uri)
    if parsed.scheme == "untitled":
        return ""
    return unquote(parsed.path).rstrip("/").rsplit("/", 1)[-1]


# -- requests and answers -----------------------------------------------------------------------
@dataclass
class Request:
    document: str  # the document's URI (or any key)
    text: str
    line: int
    character: int
    invoked: bool = False  # explicitly asked for (may be multi-line) rather than automatic
    channel: str = ""  # requests on the same (document, channel) make each other stale
    encoding: str = "utf-16"
    language: str = ""  # the document's language id (didOpen's languageId), e.g. "python", "javascript"


@dataclass
class Suggestion:
    text: str = ""
    line: int = 0
    character: int = 0  # the cursor as used, clamped, in the request's encoding units
    word: str = ""  # the identifier characters just before the cursor
    # "model", "cache", or why it is empty: "stale", "not-ready", "position", ..., and from the server
    # "outdated" (the document's version moved on before the answer) or "unknown-document"
    source: str = "none"
    seconds: float = 0.0
    completion: Any = None  # xtc.infer.complete.Completion when the model ran
    replace_units: int = 0  # units after the cursor the text replaces (closing brackets it rewrites)
    multiline: bool = False  # asked of the model as a block (the setting, and invoked or after a block opener)


@dataclass
class Job:
    request: Request
    before: str
    after: str
    multiline: bool
    settings: Settings
    suggestion: Suggestion
    future: Future = field(default_factory=Future)
    started: float = field(default_factory=time.perf_counter)

    def finish(self, text: str, source: str, completion: Any = None, replace_units: int = 0) -> None:
        result = replace(self.suggestion, text=text, source=source, completion=completion,
                         seconds=time.perf_counter() - self.started, replace_units=replace_units)
        try:
            self.future.set_result(result)
        except InvalidStateError:  # already answered (stale) or cancelled
            pass
        # A job answered stale may wait in the queue a long while: it must not hold its document.
        self.before = self.after = ""
        self.request = replace(self.request, text="")

    def done(self) -> bool:
        return self.future.done()


class LoadError(Exception):
    """A model that cannot be used; the message says why and how to install one."""


@dataclass
class _Shown:
    document: str
    before: str
    after: str
    text: str
    multiline: bool


def load_completer(src: str):
    """A `Completer` for SRC ("" = the installed default); raises XtcError with a message.
    `XTC_THREADS` sets the CPU threads (default: the runtime's choice, the physical cores)."""
    from xtc.core.sources import resolve
    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    source = resolve(src, allow_hub=False)  # the server never opens a network connection
    threads = os.environ.get(defaults.THREADS_ENV, "")
    return Completer(load_runtime(source, threads=int(threads) if threads.isdigit() and int(threads) > 0 else None))


def starts_block(before: str) -> bool:
    """The cursor is on a fresh line after one that opens a block: a multi-line suggestion (the
    block's body) is worth showing while typing too."""
    from xtc.infer.rules import opens_block

    *previous, line = before.split("\n")
    last = next((p for p in reversed(previous) if p.strip()), None)
    return not line.strip() and last is not None and opens_block(last)


def min_mean_logprob() -> float | None:
    """The junk rules' threshold: `XTC_MIN_MEAN_LOGPROB` when set (a number, or "none" to show
    every suggestion, loops included), else the default."""
    value = os.environ.get(defaults.MIN_MEAN_LOGPROB_ENV, "").strip()
    if value.lower() == "none":
        return None
    try:
        return float(value) if value else defaults.MIN_MEAN_LOGPROB
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", defaults.MIN_MEAN_LOGPROB_ENV,
                    os.environ.get(defaults.MIN_MEAN_LOGPROB_ENV))
        return defaults.MIN_MEAN_LOGPROB


# -- the engine ---------------------------------------------------------------------------------
class Engine:
    """Suggestions for documents, one inference at a time on a worker thread."""

    def __init__(self, settings: Settings | None = None, loader: Callable[[str], Any] = load_completer,
                 cache_size: int = defaults.SUGGESTION_CACHE):
        self.settings = settings or Settings()
        self.loader = loader
        self.completer: Any = None
        self.model_name: str | None = None
        self.error: str | None = None
        self.loaded_src: str | None = None
        self._load_generation = 0
        self._lock = threading.Lock()
        # Held by every completion and every load: building a runtime sets the kernels' global thread
        # count and lays out weights, never beside a generation (one load at a time, too).
        self._inference = threading.Lock()
        self._latest: dict[Hashable, Job] = {}
        self._shown: deque[_Shown] = deque(maxlen=cache_size)
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._closed = False
        self.retry_seconds = 2.0  # after a failed load, a request retries it at most this often
        self._failed_at: float | None = None  # when the current model's load failed; None otherwise
        self.sources = WorkspaceSources()  # open documents and workspace folders: the workspace context
        self.sources.configure(self.settings.workspace_context, self.settings.context_exclude)
        threading.Thread(target=self._work, name="xtc-complete", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self.completer is not None

    # -- model ----------------------------------------------------------------------------------
    def load(self, src: str | None = None) -> Future:
        """Load SRC (default: `settings.model`) on a background thread, once the running completion
        ends; requests arriving meanwhile wait for it, then run on the new model (on the old one
        if this load fails). The future gives the model's name, None when a newer load superseded this one (even
        if this one failed), or raises `LoadError` whose message tells the user what to do."""
        src = self.settings.model if src is None else src
        with self._lock:
            self._load_generation += 1
            generation = self._load_generation
            self.loaded_src = src
        future: Future = Future()
        threading.Thread(target=self._load, args=(src, generation, future), name="xtc-load", daemon=True).start()
        return future

    def _load(self, src: str, generation: int, future: Future) -> None:
        with self._inference:
            if generation != self._load_generation:
                future.set_result(None)
                return
            started = time.perf_counter()
            try:
                completer = self.loader(src)
                # Warm up: one new token, with the healed `return` a prefill and a step (both paths).
                completer.complete("def main():\n    return", max_new_tokens=1)
            except Exception as exc:
                from xtc.core.errors import XtcError

                if not isinstance(exc, XtcError):  # not a user error: keep the traceback in the log
                    log.exception("cannot load model %r", src)
                error = LoadError(f"cannot load model {src or '(default)'}: {exc}; {INSTALL_HINT}")
                with self._lock:
                    superseded = generation != self._load_generation
                    if not superseded:  # a working model keeps serving; the error says why the switch failed
                        self.error = str(error)
                        self._failed_at = time.monotonic()
                if superseded:  # the user has asked for another model since: not theirs to fix
                    log.warning("%s (superseded by a newer load)", error)
                    future.set_result(None)
                else:
                    future.set_exception(error)
                return
            with self._lock:
                if generation != self._load_generation:
                    future.set_result(None)
                    return
                self.completer, self.error, self._failed_at = completer, None, None
                self.model_name = getattr(completer.rt, "name", None) or src
                self._shown.clear()
            if getattr(completer, "tokenizer", None) is not None:
                self.sources.use_tokenizer(completer.tokenizer)
            log.info("model %s ready in %.1f s", self.model_name, time.perf_counter() - started)
            future.set_result(self.model_name)

    def configure(self, settings: Settings) -> Future | None:
        """Apply new settings; returns the load's future when the model changed."""
        with self._lock:
            model_changed = settings.model != self.settings.model
            self.settings = settings
            self._shown.clear()
        self.sources.configure(settings.workspace_context, settings.context_exclude)
        return self.load() if model_changed else None

    # -- requests -------------------------------------------------------------------------------
    def submit(self, request: Request) -> Future:
        """Start a suggestion; the future gives a `Suggestion` (text "" for none). Older requests
        on the same (document, channel) are answered empty now. Cancel the future to stop it."""
        settings = self.settings
        located = locate(request.text, request.line, request.character, request.encoding)
        offset, character = located if located else (0, 0)
        before, after = request.text[:offset], request.text[offset:]
        word = _WORD.search(before[before.rfind("\n") + 1:]).group(0) if located else ""
        multiline = settings.multiline and (request.invoked or starts_block(before))
        job = Job(request, before, after, multiline, settings,
                  Suggestion(line=request.line, character=character, word=word, multiline=multiline))
        key = (request.document, request.channel)
        with self._lock:
            older = self._latest.get(key)
            self._latest[key] = job
        job.future.add_done_callback(lambda _: self._forget(key, job))
        if older is not None:
            older.finish("", "stale")
        if self._closed:
            job.finish("", "closed")
        elif located is None:
            job.finish("", "position")
        elif self.sources.excluded(self.sources.name(request.document)):  # .env, keys: never to a model
            job.finish("", "excluded")
        elif not self.ready:
            self._retry_failed_load()
            job.finish("", "not-ready")
        elif (cached := self._from_cache(job)) is not None:
            job.finish(cached, "cache")
        elif settings.debounce_ms > 0:
            timer = threading.Timer(settings.debounce_ms / 1000, self._queue.put, (job,))
            timer.daemon = True
            timer.start()
        else:
            self._queue.put(job)
        return job.future

    def _retry_failed_load(self) -> Future | None:
        """Load again after a failure, so that following the install hint works without a restart."""
        with self._lock:
            failed_at = self._failed_at
            if failed_at is None or time.monotonic() - failed_at < self.retry_seconds:
                return None
            self._failed_at = None  # one retry in flight; a new failure sets it again
        log.info("retrying the model load after: %s", self.error)
        return self.load()

    def complete(self, request: Request, timeout: float | None = None) -> Suggestion:
        """Blocking convenience around `submit`."""
        return self.submit(request).result(timeout)

    def close(self) -> None:
        """Answer everything pending empty and stop the worker."""
        # No lock needed: `submit` puts its job in `_latest` before reading `_closed`: answered here, or it sees closed.
        self._closed = True
        with self._lock:
            jobs = list(self._latest.values())
            self._latest.clear()
        for job in jobs:
            job.finish("", "closed")
        self._queue.put(None)

    # -- the worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.done():  # stale or cancelled while it waited
                continue
            try:
                self._run(job)
            except Exception:  # a bug must not kill the worker: log it, answer empty
                log.exception("completion failed")
                job.finish("", "error")

    def _forget(self, key: Hashable, job: Job) -> None:
        with self._lock:
            if self._latest.get(key) is job:
                del self._latest[key]

    def _run(self, job: Job) -> None:
        with self._inference:  # the model is read under the lock: a load that ran meanwhile has replaced it
            self._generate(job)

    def _generate(self, job: Job) -> None:
        completer = self.completer
        if job.done():  # stale or cancelled while a load ran
            return
        if completer is None:
            job.finish("", "not-ready")
            return
        if (cached := self._from_cache(job)) is not None:  # an equal request just finished
            job.finish(cached, "cache")
            return
        s = job.settings
        max_new_tokens = min(s.max_new_tokens, completer.rt.max_context // 2)  # leave room for the prompt
        request, before, after = job.request, job.before, job.after  # `finish` (stale) may clear them meanwhile
        context = self.sources.context(request.document, before)
        result = completer.complete(before, after, max_new_tokens=max_new_tokens,
                                    context_tokens=s.context_tokens, multiline=job.multiline, should_stop=job.done,
                                    filename=file_name(request.document), language=request.language,
                                    context=context, min_mean_logprob=min_mean_logprob())
        text = "" if result.cancelled or not result.text.strip() else result.text
        if text:
            with self._lock:
                self._shown.append(_Shown(request.document, before, after, text, job.multiline))
        replaced = _EOL.split(after, maxsplit=1)[0][:result.replace] if text else ""
        job.finish(text, "model", result, units_of(replaced, request.encoding))

    def _from_cache(self, job: Job) -> str | None:
        """The rest of a recent suggestion when the user has typed its beginning since."""
        with self._lock:
            shown = list(self._shown)
        for entry in reversed(shown):
            if (entry.document != job.request.document or entry.after != job.after
                    or not job.before.startswith(entry.before) or (job.multiline and not entry.multiline)):
                continue
            typed = job.before[len(entry.before):]
            if not entry.text.startswith(typed):
                continue
            rest = entry.text[len(typed):]
            if not job.multiline:
                rest = rest.split("\n", 1)[0]
            if rest.strip():
                return rest
        return None
