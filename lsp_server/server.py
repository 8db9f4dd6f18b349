"""pygls handlers for `xtc-lsp`: translate LSP <-> `lsp_server.engine`, nothing else."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from lsp_server import __version__
from lsp_server.document import use_lsp_lines
from lsp_server.engine import Engine, LoadError, Request, Settings, Suggestion, units_of

log = logging.getLogger("xtc-lsp")
STATUS_NOTIFICATION = "xtc/status"  # {state: loading|ready|error|superseded, load, model, message}


def kernels_line(completer: Any) -> str:
    """Which compiled kernels the loaded model runs on ("avx512-vnni", "avx2"), or why numpy does."""
    rt = getattr(completer, "rt", None)
    kernels = getattr(rt, "kernels", "unknown")
    reason = getattr(rt, "kernels_error", None)
    return f"kernels: {kernels}" + (f" ({reason})" if kernels == "numpy" and reason else "")


class XtcProtocol(LanguageServerProtocol):
    """pygls logs a request it cannot read (e.g. a negative position) and never answers it; the
    client would wait forever. Answer it with the JSON-RPC error instead. A second `initialize`
    is refused: pygls would make a new, empty workspace and the settings would go back to the
    defaults (another model) under the open documents."""

    initialized_once = False

    def _handle_request(self, msg_id, method_name: str, params: Any):
        if method_name == types.INITIALIZE:
            if self.initialized_once:
                error = JsonRpcInvalidRequest("initialize was sent already: one per session")
                self._send_response(msg_id, error=error.to_response_error())
                return
            self.initialized_once = True
        super()._handle_request(msg_id, method_name, params)

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "id" in data and "method" in data:
                self._send_response(data["id"], error=exc.to_response_error())
            raise


class XtcServer(LanguageServer):
    """A language server with one completion engine."""

    def __init__(self) -> None:
        super().__init__("xtc-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=XtcProtocol)
        self.engine = Engine()
        self.client_ready = False
        self.shut_down = False  # `shutdown` came before `exit`: exit status 0
        self._pending_load: tuple[Future, int, str] | None = None
        self._progress_count = 0
        self._loads = 0

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log protocol errors (stderr and the client's log); only a model problem pops up."""
        self.log_to_client(f"{getattr(source, '__name__', source)}: {error}", types.MessageType.Warning)

    # -- helpers used by the handlers -----------------------------------------------------------
    def log_to_client(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        log.log(logging.WARNING if kind <= types.MessageType.Warning else logging.INFO, "%s", message)
        self.window_log_message(types.LogMessageParams(type=kind, message=message))

    def start_load(self, future: Future) -> None:
        """Report a model load to the client: `xtc/status` and work-done progress, then a message
        if it failed. Loads are numbered in the order they start."""
        self._loads += 1
        self._report(future, self._loads, self.engine.loaded_src or "")

    def _report(self, future: Future, load: int, src: str) -> None:
        if not self.client_ready:  # reported once the client is ready for progress
            self._pending_load = (future, load, src)
            return
        asyncio.ensure_future(self._report_load(future, load, src))

    def send_status(self, state: str, load: int, model: str, message: str) -> None:
        """The `xtc/status` notification: the load's state for programs (the client's status bar),
        `message` for people. States: loading, ready, error, superseded (a newer load replaced it)."""
        self.protocol.notify(STATUS_NOTIFICATION, {"state": state, "load": load, "model": model, "message": message})

    async def _report_load(self, future: Future, load: int, src: str) -> None:
        begin = f"loading model {src or '(default)'}"
        self.send_status("loading", load, src, begin)
        token = None
        if getattr(getattr(self.client_capabilities, "window", None), "work_done_progress", False):
            self._progress_count += 1
            token = f"xtc-load-{self._progress_count}"
            try:
                await self.work_done_progress.create_async(token)
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="xtc", message=begin))
            except Exception as exc:  # a client that refuses progress still gets completions
                log.warning("no progress: %s", exc)
                token = None
        error = None
        model = src
        try:
            name = await asyncio.wrap_future(future)
            state, model = ("ready", name) if name else ("superseded", src)
            message = f"model {name} ready" if name else "model load superseded by a newer one"
        except LoadError as exc:
            state, error = "error", str(exc)
            message = error
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        self.send_status(state, load, model, message)
        if error:  # the one message a user sees: what is wrong and how to install a model
            log.error("%s", error)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"xtc: {error}"))
        else:
            self.log_to_client(message)
            if state == "ready":
                self.log_to_client(kernels_line(self.engine.completer))

    def configure(self, raw: Any) -> None:
        settings = self.engine.settings.updated(raw)
        if settings != self.engine.settings:
            self.log_to_client(f"settings: {settings}")
        load = self.engine.configure(settings)
        if load is not None:
            self.start_load(load)

    async def suggest(self, uri: str, position: types.Position, invoked: bool, channel: str) -> Suggestion:
        document = self.workspace.text_documents.get(unquote(uri))
        if document is None:  # never opened: nothing to complete
            return Suggestion(source="unknown-document")
        version = document.version  # pygls edits the document in place: keep the number, not the object
        request = Request(uri, document.source, position.line, position.character, invoked, channel,
                          str(self.workspace.position_encoding or "utf-16"), document.language_id or "")
        suggestion = await asyncio.wrap_future(self.engine.submit(request))  # cancelling stops generation
        if self.workspace.text_documents.get(unquote(uri)) is not document or document.version != version:
            # The editor changed (or closed and reopened) the document meanwhile: the text would land elsewhere.
            suggestion = replace(suggestion, text="", replace_units=0, source="outdated")
        # Every answer and where it came from ("model" is an inference, "cache" none): `--log-level debug`.
        c = suggestion.completion
        log.debug("%s %s: %s, %s%s", channel, uri, suggestion.source, "multi-line" if suggestion.multiline else "one line",
                  "" if c is None else f", {c.prompt_tokens} prompt tokens ({c.reused_tokens} reused), "
                                       f"{c.new_tokens} new, {c.seconds * 1000:.0f} ms")
        return suggestion


def create_server() -> XtcServer:
    server = XtcServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: XtcServer, params: types.InitializeParams) -> None:
        use_lsp_lines(ls.workspace)  # pygls made it just before this handler, with no document yet
        ls.engine.settings = settings = Settings().updated(params.initialization_options)
        ls.engine.sources.configure(settings.workspace_context, settings.context_exclude)
        folders = [f.uri for f in params.workspace_folders or []] or ([params.root_uri] if params.root_uri else [])
        ls.engine.sources.set_folders(folders)
        ls.start_load(ls.engine.load())  # starts now; progress is reported after `initialized`

    @server.feature(types.INITIALIZED)
    def initialized(ls: XtcServer, params: types.InitializedParams) -> None:
        ls.client_ready = True
        watched = getattr(getattr(ls.client_capabilities, "workspace", None), "did_change_watched_files", None)
        if getattr(watched, "dynamic_registration", False):  # files changed outside the editor reach the index
            ls.client_register_capability(types.RegistrationParams([types.Registration(
                "xtc-watched-files", types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                types.DidChangeWatchedFilesRegistrationOptions([types.FileSystemWatcher("**/*")]))]))
        if ls._pending_load is not None:
            ls._report(*ls._pending_load)
            ls._pending_load = None

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: XtcServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        if not settings and getattr(getattr(ls.client_capabilities, "workspace", None), "configuration", False):
            items = [types.ConfigurationItem(section="xtc")]
            settings = (await ls.workspace_configuration_async(types.ConfigurationParams(items=items)))[0]
        ls.configure(settings)

    # The workspace context's sources (pygls keeps the documents; these handlers run after its own).
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: XtcServer, params: types.DidOpenTextDocumentParams) -> None:
        document = ls.workspace.text_documents.get(unquote(params.text_document.uri))
        ls.engine.sources.open(params.text_document.uri, params.text_document.text if document is None else document.source)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: XtcServer, params: types.DidChangeTextDocumentParams) -> None:
        document = ls.workspace.text_documents.get(unquote(params.text_document.uri))
        if document is not None:
            ls.engine.sources.open(params.text_document.uri, document.source)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: XtcServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.engine.sources.close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: XtcServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.engine.sources.files_changed([(params.text_document.uri, False)])

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: XtcServer, params: types.DidChangeWatchedFilesParams) -> None:
        ls.engine.sources.files_changed([(c.uri, c.type == types.FileChangeType.Deleted) for c in params.changes])

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(ls: XtcServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        ls.engine.sources.set_folders([f.uri for f in ls.workspace.folders.values()])

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: XtcServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        s = await ls.suggest(params.text_document.uri, params.position, invoked, "inline")
        if not s.text:
            return types.InlineCompletionList(items=[])
        cursor = types.Position(s.line, s.character)
        end = types.Position(s.line, s.character + s.replace_units)  # closing brackets it rewrites
        return types.InlineCompletionList(items=[
            types.InlineCompletionItem(insert_text=s.text, range=types.Range(cursor, end))])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=[".", "(", "[", ",", " ", "="]))
    async def completion(ls: XtcServer, params: types.CompletionParams) -> types.CompletionList:
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        s = await ls.suggest(params.text_document.uri, params.position, invoked, "completion")
        if not s.text:
            return types.CompletionList(is_incomplete=True, items=[])
        # Replace the word being typed with word + suggestion, so that clients filtering by the
        # typed word keep the item.
        encoding = str(ls.workspace.position_encoding or "utf-16")
        start = types.Position(s.line, s.character - units_of(s.word, encoding))
        full = s.word + s.text
        label = full.split("\n", 1)[0]
        item = types.CompletionItem(
            label=label if len(label) <= 60 else label[:59] + "…", kind=types.CompletionItemKind.Text,
            detail="xtc", filter_text=full, sort_text="0", insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(types.Range(start, types.Position(s.line, s.character + s.replace_units)), full),
            documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```\n{full}\n```") if "\n" in full else None)
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: XtcServer, params: None) -> None:
        ls.shut_down = True
        ls.engine.close()

    return server
