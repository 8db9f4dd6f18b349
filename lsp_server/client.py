"""A client that drives `xtc-lsp` over stdio the way an editor does, on pygls' language client:
the demo, the latency benchmark and the server's tests all use this one.

    async with session(options={"xtc": {"model": "..."}}, workspace=[folder]) as client:
        await client.wait_ready()
        uri = client.open(path.as_uri(), text)
        print(await client.suggestion(uri, end_of(text)))

Every request has a timeout (a `RequestTimeout`, one line, and the request is cancelled); the
server's stderr is read all along (a chatty server would otherwise block on a full pipe) and its
last lines are kept for error messages. No torch: the model lives in the server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

from lsprotocol import types as t
from pygls.lsp.client import LanguageClient

from lsp_server import __version__
from lsp_server.server import STATUS_NOTIFICATION

# What an editor like VS Code announces that the server uses: work-done progress for the model's
# load, answering `workspace/configuration` when settings change without values, watching files.
CAPABILITIES = t.ClientCapabilities(
    window=t.WindowClientCapabilities(work_done_progress=True),
    workspace=t.WorkspaceClientCapabilities(
        configuration=True, workspace_folders=True,
        did_change_watched_files=t.DidChangeWatchedFilesClientCapabilities(dynamic_registration=True)),
    text_document=t.TextDocumentClientCapabilities(synchronization=t.TextDocumentSyncClientCapabilities(did_save=True)),
)


class RequestTimeout(TimeoutError):
    """The server did not answer a request (or reach a state) in time."""


def end_of(text: str) -> t.Position:
    """The position just after the last character of `text` (LSP lines, UTF-16 columns)."""
    lines = text.split("\n")
    return t.Position(len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2)


def server_command() -> list[str]:
    """`xtc-lsp` beside this interpreter, else on PATH, else `python -m lsp_server`."""
    script = Path(sys.executable).with_name("xtc-lsp")
    if script.exists():
        return [str(script)]
    found = shutil.which("xtc-lsp")
    return [found] if found else [sys.executable, "-m", "lsp_server"]


class Client(LanguageClient):
    """One server process and what it said: shown and logged messages, work-done progress,
    `xtc/status` notifications. `on_notification(method, params)` sees each as it arrives;
    `echo_stderr` copies the server's stderr to this process's."""

    def __init__(self, *, timeout: float = 60.0, name: str = "xtc-client", echo_stderr: bool = False,
                 on_notification: Callable[[str, Any], None] | None = None):
        super().__init__(name, __version__)
        self.timeout = timeout
        self.messages: list[t.ShowMessageParams] = []
        self.log_messages: list[t.LogMessageParams] = []
        self.progress_reports: dict[t.ProgressToken, list[Any]] = {}
        self.statuses: list[dict] = []
        self.registrations: list[t.Registration] = []  # capabilities the server registered dynamically
        self.configuration: dict[str, Any] = {}  # section -> value, the answers to workspace/configuration
        self.result: t.InitializeResult | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._echo_stderr = echo_stderr
        self._stderr_task: asyncio.Task | None = None
        self._on_notification = on_notification
        self._versions: dict[str, int] = {}
        self._register()

    def _register(self) -> None:
        def tell(method: str, params: Any) -> None:
            if self._on_notification is not None:
                self._on_notification(method, params)

        @self.feature(t.WINDOW_SHOW_MESSAGE)
        def show(params: t.ShowMessageParams) -> None:
            self.messages.append(params)
            tell(t.WINDOW_SHOW_MESSAGE, params)

        @self.feature(t.WINDOW_LOG_MESSAGE)
        def log(params: t.LogMessageParams) -> None:
            self.log_messages.append(params)
            tell(t.WINDOW_LOG_MESSAGE, params)

        @self.feature(t.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(params: t.WorkDoneProgressCreateParams) -> None:
            self.progress_reports.setdefault(params.token, [])

        kinds = {"begin": t.WorkDoneProgressBegin, "report": t.WorkDoneProgressReport, "end": t.WorkDoneProgressEnd}

        @self.feature(t.PROGRESS)
        def progress(params: t.ProgressParams) -> None:
            value = params.value
            if isinstance(value, dict) and value.get("kind") in kinds:
                value = self.protocol._converter.structure(value, kinds[value["kind"]])
            self.progress_reports.setdefault(params.token, []).append(value)
            tell(t.PROGRESS, value)

        @self.feature(t.WORKSPACE_CONFIGURATION)
        def configuration(params: t.ConfigurationParams) -> list[Any]:
            return [self.configuration.get(item.section or "") for item in params.items]

        @self.feature(t.CLIENT_REGISTER_CAPABILITY)
        def register(params: t.RegistrationParams) -> None:
            self.registrations.extend(params.registrations)

        @self.feature(STATUS_NOTIFICATION)
        def status(params: Any) -> None:  # pygls gives an unknown method's params as a namedtuple
            status = params if isinstance(params, dict) else params._asdict()
            self.statuses.append(status)
            tell(STATUS_NOTIFICATION, status)

    # --- the process --------------------------------------------------------------------------

    async def start(self, command: Sequence[str] | None = None, *, env: dict[str, str] | None = None,
                    cwd: str | os.PathLike | None = None) -> None:
        """Start the server (default `server_command()`) with environment `env` (default: this
        process's) in folder `cwd`."""
        await self.start_io(*(command or server_command()), env=env, cwd=cwd)
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        stream = self._server.stderr
        pending = b""
        # Chunks, not readline(): a log line longer than asyncio's 64 KiB line limit must not stop it.
        while chunk := await stream.read(65536):
            if self._echo_stderr:  # whatever sys.stderr is now (pytest swaps it per test)
                sys.stderr.write(chunk.decode("utf-8", "replace"))
                sys.stderr.flush()
            *lines, pending = (pending + chunk).split(b"\n")
            self.stderr_tail.extend(line.decode("utf-8", "replace")[:500] for line in lines if line.strip())
        if pending.strip():
            self.stderr_tail.append(pending.decode("utf-8", "replace")[:500])

    @property
    def pid(self) -> int | None:
        """The server's process id (None before it started): to watch its memory, for one."""
        return None if self._server is None else self._server.pid

    @property
    def returncode(self) -> int | None:
        """The server's exit status, None while it runs (or before it started)."""
        return None if self._server is None else self._server.returncode

    def _why(self) -> str:
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        return f" (server stderr: {last})" if last else ""

    async def request(self, method: str, params: Any, timeout: float | None = None) -> Any:
        """Send a request and await its answer; after `timeout` seconds (default: the client's)
        cancel it and raise a one-line `RequestTimeout`."""
        timeout = self.timeout if timeout is None else timeout
        msg_id = str(uuid.uuid4())
        future = self.protocol.send_request_async(method, params, msg_id=msg_id)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            if self.returncode is None:
                self.cancel_request(t.CancelParams(id=msg_id))
            raise RequestTimeout(f"xtc-lsp: no answer to {method} in {timeout:g} s{self._why()}") from None

    async def initialize(self, options: Any = None, workspace: Sequence[str | os.PathLike] | None = None,
                         capabilities: t.ClientCapabilities = CAPABILITIES,
                         timeout: float | None = None) -> t.InitializeResult:
        """`initialize` with `initializationOptions` and workspace folders (paths), then `initialized`."""
        folders = [t.WorkspaceFolder(Path(p).resolve().as_uri(), Path(p).resolve().name) for p in workspace or ()]
        params = t.InitializeParams(capabilities=capabilities, process_id=os.getpid(), initialization_options=options,
                                    workspace_folders=folders or None,
                                    root_uri=folders[0].uri if folders else None)
        self.result = await self.request(t.INITIALIZE, params, timeout)
        self.initialized(t.InitializedParams())
        return self.result

    async def close(self, timeout: float | None = None) -> int | None:
        """`shutdown` and `exit`, then wait for the process (killed if it outstays `timeout`);
        returns its exit status (0 after a clean shutdown, negative when it had to be killed)."""
        timeout = self.timeout if timeout is None else timeout
        if self._server is None:
            return None
        try:
            if self.returncode is None and self.result is not None:
                await self.request(t.SHUTDOWN, None, timeout)
                if not self.stopped:  # pygls stops the client when the process exits
                    self.exit(None)
                await asyncio.wait_for(self._server.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):  # RequestTimeout too: killed below, the status says so
            pass
        finally:
            if self.returncode is None:  # never initialized, no answer, or it stayed after `exit`
                self._server.kill()
                await self._server.wait()
            if self._stderr_task is not None:
                await self._stderr_task
            await self.stop()
        return self.returncode

    # --- documents ----------------------------------------------------------------------------

    def open(self, uri: str, text: str, language: str = "python") -> str:
        self._versions[uri] = 1
        self.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, language, 1, text)))
        return uri

    def change(self, uri: str, start: t.Position, end: t.Position, text: str) -> None:
        """Replace the range `start`..`end` with `text` (an incremental change)."""
        self._versions[uri] = self._versions.get(uri, 1) + 1
        self.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(uri=uri, version=self._versions[uri]),
            [t.TextDocumentContentChangePartial(range=t.Range(start, end), text=text)]))

    def close_document(self, uri: str) -> None:
        self._versions.pop(uri, None)
        self.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(uri)))

    def save(self, uri: str) -> None:
        self.text_document_did_save(t.DidSaveTextDocumentParams(t.TextDocumentIdentifier(uri)))

    def files_changed(self, changes: Sequence[tuple[str, t.FileChangeType]]) -> None:
        """`workspace/didChangeWatchedFiles`: (uri, Created/Changed/Deleted) of files on disk."""
        self.workspace_did_change_watched_files(t.DidChangeWatchedFilesParams(
            [t.FileEvent(uri, kind) for uri, kind in changes]))

    def configure(self, settings: Any) -> None:
        """`workspace/didChangeConfiguration` with `settings` (None: the server asks for them)."""
        self.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings=settings))

    # --- completions --------------------------------------------------------------------------

    @staticmethod
    def inline_params(uri: str, position: t.Position, invoked: bool = False) -> t.InlineCompletionParams:
        kind = t.InlineCompletionTriggerKind.Invoked if invoked else t.InlineCompletionTriggerKind.Automatic
        return t.InlineCompletionParams(t.InlineCompletionContext(kind), t.TextDocumentIdentifier(uri), position)

    async def inline(self, uri: str, position: t.Position, invoked: bool = False,
                     timeout: float | None = None) -> list[t.InlineCompletionItem]:
        result = await self.request(t.TEXT_DOCUMENT_INLINE_COMPLETION, self.inline_params(uri, position, invoked),
                                    timeout)
        return list(result.items) if isinstance(result, t.InlineCompletionList) else list(result or [])

    async def suggestion(self, uri: str, position: t.Position, invoked: bool = False,
                         timeout: float | None = None) -> str:
        """The first inline suggestion's text at `position`, "" when there is none."""
        items = await self.inline(uri, position, invoked, timeout)
        return items[0].insert_text if items and isinstance(items[0].insert_text, str) else ""

    async def completion(self, uri: str, position: t.Position, timeout: float | None = None) -> list[t.CompletionItem]:
        result = await self.request(t.TEXT_DOCUMENT_COMPLETION, t.CompletionParams(
            t.TextDocumentIdentifier(uri), position, t.CompletionContext(t.CompletionTriggerKind.Invoked)), timeout)
        return list(result.items) if isinstance(result, t.CompletionList) else list(result or [])

    # --- the model's load ---------------------------------------------------------------------

    def statuses_of(self, load: int | None = None) -> list[dict]:
        """The `xtc/status` notifications received (of load number `load`), oldest first."""
        return [s for s in self.statuses if load is None or s["load"] == load]

    def progress_ends(self) -> list[t.WorkDoneProgressEnd]:
        return [v for values in self.progress_reports.values() for v in values if isinstance(v, t.WorkDoneProgressEnd)]

    async def _until(self, found: Callable[[], Any], timeout: float | None, what: str) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not (value := found()):
            if self.returncode is not None:
                raise RuntimeError(f"xtc-lsp exited ({self.returncode}) before {what}{self._why()}")
            if time.monotonic() > deadline:
                raise RequestTimeout(f"xtc-lsp: no {what} after {timeout:g} s{self._why()}")
            await asyncio.sleep(0.02)
        return value

    async def wait_ready(self, loads: int = 1, timeout: float | None = None) -> t.WorkDoneProgressEnd:
        """Wait until `loads` model loads have ended (their work-done progress `end`, which also
        comes when a load fails: see `messages` for the error)."""
        ends = await self._until(lambda: self.progress_ends()[loads - 1:], timeout, f"end of model load {loads}")
        return ends[0]

    async def wait_status(self, load: int, states: tuple[str, ...] = ("ready", "error", "superseded"),
                          timeout: float | None = None) -> dict:
        """The first `xtc/status` of load number `load` in one of `states`."""
        found = await self._until(lambda: [s for s in self.statuses_of(load) if s["state"] in states], timeout,
                                  f"{'/'.join(states)} status for load {load}")
        return found[0]


@contextlib.asynccontextmanager
async def session(command: Sequence[str] | None = None, *, options: Any = None,
                  workspace: Sequence[str | os.PathLike] | None = None, env: dict[str, str] | None = None,
                  cwd: str | os.PathLike | None = None, timeout: float = 60.0,
                  capabilities: t.ClientCapabilities = CAPABILITIES, **client_options: Any) -> AsyncIterator[Client]:
    """A started and initialized server; shut down (or killed) on leaving, its exit status in
    `client.returncode`."""
    client = Client(timeout=timeout, **client_options)
    await client.start(command, env=env, cwd=cwd)
    try:
        await client.initialize(options, workspace, capabilities)
        yield client
    finally:
        await client.close()
