"""The server's engine without the protocol: positions, settings, staleness, cancellation,
debounce, the suggestion cache, and model loading failures."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from lsp_server.engine import Engine, LoadError, Request, Settings, file_name, load_completer, locate, units_of
from tests.lsp_fixtures import expected, tiny_models
from xtc.core.errors import XtcError
from xtc.infer.complete import Completion


class FakeCompleter:
    """Answers `text` after `tokens` steps of `step_seconds`, checking `should_stop` between steps
    like the real `Completer`."""

    def __init__(self, text: str = "return value", tokens: int = 1, step_seconds: float = 0.0):
        self.rt = SimpleNamespace(max_context=2048, name="fake")
        self.text, self.tokens, self.step_seconds = text, tokens, step_seconds
        self.calls: list[dict] = []
        self.started = threading.Event()

    def complete(self, before, after="", *, should_stop=None, **options):
        call = dict(before=before, after=after, steps=0, stopped=False, **options)
        self.calls.append(call)
        self.started.set()
        for _ in range(self.tokens):
            if should_stop is not None and should_stop():
                call["stopped"] = True
                return Completion("", cancelled=True)
            time.sleep(self.step_seconds)
            call["steps"] += 1
        if isinstance(self.text, Exception):
            raise self.text
        return Completion(self.text)


def ready(fake: FakeCompleter, **settings) -> Engine:
    engine = Engine(Settings(**settings), loader=lambda src: fake)
    assert engine.load().result(10) == "fake"
    fake.calls.clear()  # the warm-up
    fake.started.clear()
    return engine


def request(text: str, channel: str = "", invoked: bool = False, document: str = "file:///a.py") -> Request:
    lines = text.split("\n")
    return Request(document, text, len(lines) - 1, len(lines[-1]), invoked, channel)


# -- positions and settings ---------------------------------------------------------------------
def test_locate_counts_utf16_and_clamps():
    text = "a\U0001F600b\nxy\r\nz"
    assert locate(text, 0, 3) == (2, 3)  # after the emoji: two UTF-16 units
    assert locate(text, 0, 2) == (1, 1)  # inside the surrogate pair: back to its start
    assert locate(text, 0, 5, "utf-8") == (2, 5)
    assert locate(text, 0, 2, "utf-32") == (2, 2)
    assert locate(text, 1, 99) == (6, 2)  # past the end of the line: its end
    assert locate(text, 2, 0) == (8, 0)  # after \r\n
    assert locate(text, 3, 0) is None  # past the last line
    assert locate(text, -1, 0) is None and locate(text, 0, -1) is None
    assert locate("", 0, 0) == (0, 0)
    assert units_of("\U0001F600x") == 3 and units_of("é", "utf-8") == 2


def test_the_completer_learns_the_file_name_and_language():
    assert file_name("file:///home/u/src/app.js") == "app.js"
    assert file_name("file:///C%3A/w/my%20file.ts") == "my file.ts"
    assert file_name("untitled:Untitled-1") == ""
    fake = FakeCompleter()
    engine = ready(fake)
    engine.complete(Request("file:///w/src/main.go", "package main\n\nfunc ", 2, 5, language="go"))
    assert fake.calls[-1]["filename"] == "main.go" and fake.calls[-1]["language"] == "go"
    engine.complete(request("x = "))
    assert fake.calls[-1]["filename"] == "a.py" and fake.calls[-1]["language"] == ""
    engine.close()


def test_settings_accept_every_shape_and_ignore_bad_values():
    want = Settings(model="m", max_new_tokens=8, multiline=True)
    raw = {"model": "m", "maxNewTokens": 8, "multiline": True}
    for shape in (raw, {"xtc": raw}, {"settings": raw}, {"settings": {"xtc": raw}}):
        assert Settings().updated(shape) == want
    assert Settings().updated(None) == Settings()
    bad = Settings().updated({"maxNewTokens": "many", "multiline": 1, "debounceMs": True, "contextTokens": 10**9})
    assert bad == Settings(context_tokens=32768)
    assert want.updated({"maxNewTokens": 16}) == Settings(model="m", max_new_tokens=16, multiline=True)


# -- suggestions ----------------------------------------------------------------------------------
def test_suggestion_for_the_text_around_the_cursor():
    fake = FakeCompleter("th.join(a, b)")
    engine = ready(fake, max_new_tokens=7, context_tokens=99)
    text = "import os\nx = os.pa\ny = 1"
    s = engine.complete(Request("file:///a.py", text, 1, 9))
    assert (s.text, s.source, s.word, s.line, s.character) == ("th.join(a, b)", "model", "pa", 1, 9)
    [call] = fake.calls
    assert (call["before"], call["after"]) == ("import os\nx = os.pa", "\ny = 1")
    assert (call["max_new_tokens"], call["context_tokens"], call["multiline"]) == (7, 99, False)


def test_multiline_for_invoked_requests_when_enabled():
    fake = FakeCompleter()
    engine = ready(fake, multiline=True)
    engine.complete(request("x = 1\n", invoked=False, channel="a"))
    engine.complete(request("x = 2\n", invoked=True, channel="b"))
    assert [c["multiline"] for c in fake.calls] == [False, True]
    ready(fake, multiline=False).complete(request("x = 3\n", invoked=True))
    assert fake.calls[-1]["multiline"] is False


def test_never_only_whitespace_and_errors_answer_empty():
    fake = FakeCompleter("   \n ")
    engine = ready(fake)
    assert engine.complete(request("x = ")).text == ""
    fake.text = RuntimeError("boom")
    assert engine.complete(request("y = ")).source == "error"
    fake.text = "ok"
    assert engine.complete(request("z = ")).text == "ok"  # the worker survived


def test_bad_positions_answer_empty_without_inference():
    fake = FakeCompleter()
    engine = ready(fake)
    assert engine.complete(Request("d", "x", 5, 0)).source == "position"
    assert engine.complete(Request("d", "x", -1, 0)).source == "position"
    assert engine.complete(Request("d", "x = ", 0, 99)).character == 4
    assert len(fake.calls) == 1


def test_typing_the_suggestion_answers_the_rest_from_the_cache():
    fake = FakeCompleter("return value")
    engine = ready(fake)
    text = "def f():\n    "
    assert engine.complete(request(text)).text == "return value"
    s = engine.complete(request(text + "ret"))
    assert (s.text, s.source) == ("urn value", "cache")
    assert len(fake.calls) == 1
    assert engine.complete(request(text + "x")).source == "model"  # not the suggestion: infer again
    assert engine.complete(request(text + "return value")).source == "model"  # nothing left of it
    assert engine.complete(request(text + "ret", document="file:///b.py")).source == "model"  # another file


def test_cache_is_cleared_by_a_settings_change():
    fake = FakeCompleter("return value")
    engine = ready(fake)
    engine.complete(request("a = "))
    engine.configure(Settings(max_new_tokens=2))
    assert engine.complete(request("a = ")).source == "model"


# -- responsiveness -------------------------------------------------------------------------------
def test_newer_request_makes_the_older_one_stale_at_once():
    fake = FakeCompleter(tokens=200, step_seconds=0.005)
    engine = ready(fake)
    older = engine.submit(request("a = 1\n"))
    assert fake.started.wait(5)
    fake.tokens = 3  # the newer one is quick
    newer = engine.submit(request("a = 1\nb"))
    assert older.result(0.5).source == "stale"  # answered before the newer one finished
    assert newer.result(10).text == "return value"
    assert fake.calls[0]["stopped"] and fake.calls[0]["steps"] < 200  # its generation stopped


def test_other_channels_and_documents_are_not_stale():
    fake = FakeCompleter(tokens=5, step_seconds=0.01)
    engine = ready(fake)
    futures = [engine.submit(request("q = ", channel="inline")), engine.submit(request("q = ", channel="completion")),
               engine.submit(request("q = ", document="file:///other.py"))]
    assert [f.result(10).text for f in futures] == ["return value"] * 3
    assert not engine._latest  # answered requests are forgotten


def test_cancel_stops_generation_between_tokens():
    fake = FakeCompleter(tokens=200, step_seconds=0.005)
    engine = ready(fake)
    future = engine.submit(request("c = "))
    assert fake.started.wait(5)
    assert future.cancel()
    fake.tokens = 1
    engine.complete(request("d = ", document="file:///next.py"))  # the worker is free again
    assert fake.calls[0]["stopped"] and fake.calls[0]["steps"] < 200


def test_debounce_coalesces_a_burst_of_typing():
    fake = FakeCompleter()
    engine = ready(fake, debounce_ms=150)
    futures = [engine.submit(request("value = " + "x" * i)) for i in range(5)]
    results = [f.result(5) for f in futures]
    assert [r.source for r in results] == ["stale"] * 4 + ["model"]
    assert len(fake.calls) == 1 and fake.calls[0]["before"] == "value = xxxx"


def test_requests_before_the_model_is_ready_answer_empty():
    gate = threading.Event()
    fake = FakeCompleter()
    engine = Engine(loader=lambda src: (gate.wait(10), fake)[1])
    loading = engine.load()
    assert engine.complete(request("x = "), timeout=1).source == "not-ready"
    gate.set()
    loading.result(10)
    assert engine.complete(request("x = ")).text == "return value"
    engine.close()
    assert engine.complete(request("y = ")).source == "closed"


def test_warm_up_never_runs_beside_a_completion():
    """One inference at a time, always: a new model's warm-up waits for the running completion
    (two at once would be two OpenMP thread teams fighting over the cores)."""
    lock, active, peak = threading.Lock(), [0], [0]

    class Counting(FakeCompleter):
        def complete(self, *args, **kwargs):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                return super().complete(*args, **kwargs)
            finally:
                with lock:
                    active[0] -= 1

    old, new = Counting(tokens=30, step_seconds=0.01), Counting(tokens=30, step_seconds=0.01)
    engine = Engine(loader=lambda src: old if src == "old" else new)
    assert engine.load("old").result(10) == "fake"
    old.started.clear()
    running = engine.submit(request("x = "))
    assert old.started.wait(5)
    assert engine.load("new").result(10) == "fake"
    assert running.result(10).text == "return value"
    assert new.calls and peak[0] == 1



def test_a_load_waits_for_the_running_completion_and_completions_wait_for_the_load():
    """Building a runtime sets the kernels' global thread count and lays out weights: it holds the
    inference lock like a completion, and a request arriving meanwhile runs on the new model."""
    generating = threading.Event()  # set while the old model generates

    class Tracking(FakeCompleter):
        def complete(self, *args, **kwargs):
            generating.set()
            try:
                return super().complete(*args, **kwargs)
            finally:
                generating.clear()

    old, new = Tracking(tokens=30, step_seconds=0.01), FakeCompleter("new model")
    seen, during = [], []

    def loader(src):
        if src == "old":
            return old
        seen.append(generating.is_set())
        during.append(engine.submit(request("y = ", document="file:///during.py")))
        time.sleep(0.1)  # reading the weights
        seen.append(generating.is_set())
        return new

    engine = Engine(loader=loader)
    assert engine.load("old").result(10) == "fake"
    old.started.clear()
    running = engine.submit(request("x = "))
    assert old.started.wait(5)
    assert engine.load("new").result(10) == "fake"
    assert running.result(10).text == "return value"
    assert seen == [False, False], "the load ran while the old model generated"
    assert during[0].result(10).text == "new model"  # not the old model, after the new one's load



@pytest.mark.parametrize("debounce_ms", [0, 1])
def test_requests_racing_close_are_all_answered(debounce_ms):
    """Shutdown never leaves a request unanswered, however it interleaves with `close`: requests
    from several threads (and debounce timers firing) around it, many times, with frequent thread
    switches. (Passed before any change; it fails if `close` sets `_closed` after emptying `_latest`.)"""
    # No hang: submit puts a job in _latest before reading _closed, close sets _closed before answering all of _latest.
    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round in range(60):
            fake = FakeCompleter(tokens=3, step_seconds=0.001)
            engine = ready(fake, debounce_ms=debounce_ms)
            futures, go, stop = [], threading.Barrier(4), threading.Event()

            def typing(doc):
                go.wait()
                i = 0
                while not stop.is_set():  # on until after `close` has returned
                    i += 1
                    futures.append(engine.submit(request("x = " + "y" * (i % 50), document=f"file:///{doc}.py",
                                                         channel=str(i % 2))))

            threads = [threading.Thread(target=typing, args=(n,)) for n in range(3)]
            for thread in threads:
                thread.start()
            go.wait()
            time.sleep(0.0005 * (round % 5))  # close at a different point of the burst each round
            engine.close()
            time.sleep(0.002)
            stop.set()
            for thread in threads:
                thread.join(10)
            for future in futures:
                assert future.result(5).source in ("model", "cache", "stale", "closed")
            assert not engine._latest
    finally:
        sys.setswitchinterval(interval)


# -- loading ----------------------------------------------------------------------------------------
def test_missing_default_model_explains_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XTC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("xtc.core.store.REPO_MODELS", tmp_path / "no-repo-models")
    with pytest.raises(XtcError):
        load_completer("")
    engine = Engine()
    with pytest.raises(LoadError):
        engine.load().result(30)
    assert "no model installed" in engine.error and "xtc install smollm2" in engine.error
    assert engine.complete(request("x = ")).source == "not-ready"


def test_broken_model_is_an_error_not_a_crash(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    engine = Engine(Settings(model=str(broken)))
    with pytest.raises(LoadError):
        engine.load().result(30)
    assert str(broken) in engine.error and "xtc install smollm2" in engine.error

    def bug(src):
        raise RuntimeError("unexpected")

    engine = Engine(loader=bug)
    with pytest.raises(LoadError):
        engine.load().result(10)
    assert "unexpected" in engine.error


def test_a_failed_load_that_a_newer_one_replaced_is_superseded_not_an_error():
    gate = threading.Event()
    fake = FakeCompleter()

    def loader(src):
        if src == "broken":
            gate.wait(10)
            raise XtcError("no such model")
        return fake

    engine = Engine(loader=loader)
    old = engine.load("broken")
    new = engine.load("good")
    gate.set()
    assert old.result(10) is None  # superseded: the user no longer asked for it
    assert new.result(10) == "fake" and engine.error is None and engine.ready


def test_the_model_src_is_resolved_once(monkeypatch):
    import xtc.core.sources
    import xtc.infer.runtime

    calls, real = [], xtc.core.sources.resolve

    def counting(src, *args, **kwargs):
        calls.append(src)
        return real(src, *args, **kwargs)

    monkeypatch.setattr(xtc.core.sources, "resolve", counting)
    monkeypatch.setattr(xtc.infer.runtime, "resolve", counting)
    model = str(tiny_models().gpt2)
    load_completer(model)
    assert calls == [model]  # the engine's Source goes down to load_runtime


def test_real_tiny_model_and_cancellation(monkeypatch):
    monkeypatch.setenv("XTC_THREADS", "1")  # as `expected` computes it
    model = tiny_models().gpt2
    engine = Engine(Settings(model=str(model)))
    assert engine.load().result(60) == "gpt2"
    text = "import os\n\n\ndef main():\n    path = os.pa"
    assert engine.complete(request(text)).text == expected(model, text)

    steps = []
    rt = engine.completer.rt
    real_step = rt.step

    def slow_step(token):
        steps.append(token)
        time.sleep(0.01)
        return real_step(token)

    rt.step = slow_step
    results = []
    real_complete = engine.completer.complete
    engine.completer.complete = lambda *a, **k: results.append(real_complete(*a, **k)) or results[-1]
    engine.configure(Settings(model=str(model), max_new_tokens=200))
    future = engine.submit(request("class Queue:\n    def get(self):\n        return self."))
    time.sleep(0.2)
    assert steps and not future.done(), "still generating when cancelled"
    assert future.cancel() and future.cancelled()
    at_cancel = len(steps)
    engine.configure(Settings(model=str(model), max_new_tokens=1))
    engine.complete(request("x = 1", document="file:///next.py"))  # waits for the worker
    # Generation stopped at the cancel: at most the step in flight, plus the next request's one.
    assert len(steps) <= at_cancel + 2, (at_cancel, len(steps))
    assert [r.cancelled for r in results] == [True, False]  # the cancel stopped it, not the line's end


# -- workspace context ----------------------------------------------------------------------------
HELPERS = "def parse_header_value(text):\n    name, _, value = text.partition(':')\n    return name, value\n"
READER = "def read(text):\n    for line in text.splitlines():\n        name, _, value = line.partition(':')\n        "


def with_tokenizer(fake: FakeCompleter) -> FakeCompleter:
    from tests.tiny import build_tokenizer

    fake.tokenizer = build_tokenizer()
    return fake


def test_other_open_documents_and_the_workspace_folder_give_context(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "store.py").write_text("class MessageStore:\n    def add_message(self, message):\n"
                                               "        self.messages.append(message)\n")
    fake = with_tokenizer(FakeCompleter())
    engine = Engine(Settings(), loader=lambda src: fake)
    engine.sources.set_folders([tmp_path.as_uri()])
    engine.sources.open((tmp_path / "pkg" / "headers.py").as_uri(), HELPERS)  # open, unsaved: not on disk
    assert engine.load().result(10) == "fake"
    reader = (tmp_path / "pkg" / "reader.py").as_uri()
    for _ in range(100):  # the folder is indexed in the background
        if "pkg/store.py" in engine.sources._workspace.index.paths():
            break
        time.sleep(0.05)
    engine.complete(Request(reader, READER + "store.add_message(name)\n        ", 4, 8))
    context = fake.calls[-1]["context"]
    assert "parse_header_value" in context.text and "add_message" in context.text
    assert context.text.startswith("# Compare this snippet from pkg/")  # the tiny vocabulary has no repo tokens


def wait_for(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_files_changed_on_disk_are_reread_and_deleted_ones_dropped(tmp_path):
    """didSave / didChangeWatchedFiles: a file changed or created on disk is read again, a
    deleted one (or the files of a deleted folder) leaves the index; ignored files stay out."""
    (tmp_path / "pkg" / "old").mkdir(parents=True)
    store, new, ignored = tmp_path / "pkg" / "store.py", tmp_path / "pkg" / "new.py", tmp_path / "pkg" / "gen.py"
    store.write_text("class MessageStore:\n    def add_message(self, message):\n        self.messages.append(message)\n")
    (tmp_path / "pkg" / "old" / "legacy.py").write_text("def legacy_parse_header(line):\n    return line\n")
    (tmp_path / "pkg" / ".gitignore").write_text("gen.py\n")
    fake = with_tokenizer(FakeCompleter())
    engine = Engine(Settings(), loader=lambda src: fake)
    engine.sources.set_folders([tmp_path.as_uri()])
    assert engine.load().result(10) == "fake"
    index = engine.sources._workspace.index
    wait_for(lambda: {"pkg/store.py", "pkg/old/legacy.py"} <= set(index.paths()), "the folder was not indexed")

    store.write_text("class MessageStore:\n    def append_record(self, record):\n        self.records.append(record)\n")
    new.write_text("def parse_header_value(line):\n    return line.partition(':')[2].strip()\n")
    ignored.write_text("GENERATED = 1\n")
    engine.sources.files_changed([(store.as_uri(), False), (new.as_uri(), False), (ignored.as_uri(), False)])
    wait_for(lambda: "pkg/new.py" in index.paths() and "append_record" in index.text("pkg/store.py"),
             "changed files were not re-read")
    assert "pkg/gen.py" not in index.paths()

    store.unlink()
    engine.sources.files_changed([(store.as_uri(), True), ((tmp_path / "pkg" / "old").as_uri(), True)])
    wait_for(lambda: not {"pkg/store.py", "pkg/old/legacy.py"} & set(index.paths()), "deleted files stayed")
    engine.complete(request(READER + "x = parse_header_value(line)\n", document=(tmp_path / "pkg" / "reader.py").as_uri()))
    assert "parse_header_value(line):" in fake.calls[-1]["context"].text


def test_without_workspace_context_the_prompt_is_the_file_alone(tmp_path):
    fake = with_tokenizer(FakeCompleter())
    engine = ready(fake, workspace_context=False)
    engine.sources.open("file:///w/headers.py", HELPERS)
    engine.complete(request(READER, document="file:///w/reader.py"))
    assert fake.calls[-1]["context"] is None
    assert Settings().updated({"workspaceContext": False, "contextExclude": ["*.csv", 3]}) == \
        Settings(workspace_context=False)  # a list with a non-string is ignored
    assert Settings().updated({"contextExclude": [" *.csv "]}).context_exclude == ("*.csv",)


def test_secret_files_are_never_completed_nor_given_as_context(tmp_path):
    fake = with_tokenizer(FakeCompleter())
    engine = ready(fake, context_exclude=("private/",))
    engine.sources.set_folders([tmp_path.as_uri()])
    for name in (".env", "deploy.pem", "private/notes.py"):
        answer = engine.complete(request("API_KEY = ", document=(tmp_path / name).as_uri()))
        assert (answer.text, answer.source) == ("", "excluded")
    assert fake.calls == []  # no inference ran
    engine.sources.open((tmp_path / ".env").as_uri(), "parse_header_value = 'sk-secret'\n")
    engine.sources.open((tmp_path / "private" / "notes.py").as_uri(), "parse_header_value = 'secret'\n")
    engine.complete(request(READER + "x = parse_header_value(line)\n", document=(tmp_path / "app.py").as_uri()))
    assert "secret" not in (fake.calls[-1]["context"].text if fake.calls[-1]["context"] else "")


def test_a_suggestion_that_rewrites_the_closing_brackets_replaces_them():
    fake = FakeCompleter()
    fake.complete = lambda before, after="", **o: Completion('path, "r") as f:', replace=2)
    engine = ready(fake)
    answer = engine.complete(Request("file:///a.py", "with open():\n", 0, 10))
    assert answer.text == 'path, "r") as f:' and answer.replace_units == 2


def test_the_server_withholds_suggestions_the_model_is_unsure_of(monkeypatch):
    fake = FakeCompleter()
    engine = ready(fake)
    monkeypatch.delenv("XTC_MIN_MEAN_LOGPROB")
    engine.complete(request("x = "))
    assert fake.calls[-1]["min_mean_logprob"] == -1.0
    monkeypatch.setenv("XTC_MIN_MEAN_LOGPROB", "-2.5")
    engine.complete(request("y = "))
    assert fake.calls[-1]["min_mean_logprob"] == -2.5
    monkeypatch.setenv("XTC_MIN_MEAN_LOGPROB", "none")
    engine.complete(request("z = "))
    assert fake.calls[-1]["min_mean_logprob"] is None


def test_with_multiline_a_fresh_line_after_a_block_opener_gets_the_block_while_typing():
    fake = FakeCompleter()
    engine = ready(fake, multiline=True)
    engine.complete(request("def f(x):\n    "))
    engine.complete(request("x = 1\n    "))
    assert [c["multiline"] for c in fake.calls] == [True, False]
    ready(fake, multiline=False).complete(request("def f(x):\n    "))
    assert fake.calls[-1]["multiline"] is False


def test_a_failed_switch_keeps_the_working_model_serving():
    fake = FakeCompleter("return 1")

    def loader(src):
        if src == "missing":
            raise XtcError("no model at missing")
        return fake

    engine = Engine(Settings(), loader=loader)
    assert engine.load().result(10) == "fake"
    with pytest.raises(LoadError):
        engine.configure(Settings(model="missing")).result(10)
    assert engine.ready and "missing" in engine.error
    assert engine.complete(request("def f():\n    "), timeout=10).text == "return 1"


def test_a_request_after_a_failed_load_retries_it_so_installing_needs_no_restart():
    fake = FakeCompleter("return 1")
    installed = threading.Event()

    def loader(src):
        if not installed.is_set():
            raise XtcError("no model installed")
        return fake

    engine = Engine(Settings(), loader=loader)
    engine.retry_seconds = 0.0
    with pytest.raises(LoadError):
        engine.load().result(10)
    installed.set()  # the user runs `xtc install smollm2`
    assert engine.complete(request("def f():\n    "), timeout=10).text == ""  # not ready yet: starts the retry
    deadline = time.monotonic() + 10
    while not engine.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.complete(request("def f():\n    "), timeout=10).text == "return 1"


def test_warm_up_is_one_prefill_and_one_step():
    """A new model's warm-up runs both paths of the model (so a broken one fails its load, and the
    first suggestion finds them warm) and nothing more: it delays the model's readiness."""
    calls = []

    def counting_loader(src):
        completer = load_completer(src)
        rt = completer.rt
        prefill, step = rt.prefill, rt.step
        rt.prefill = lambda ids: calls.append("prefill") or prefill(ids)
        rt.step = lambda token: calls.append("step") or step(token)
        return completer

    engine = Engine(Settings(model=str(tiny_models().gpt2)), loader=counting_loader)
    assert engine.load().result(60) == "gpt2"
    assert calls == ["prefill", "step"]


def test_requests_answered_stale_while_they_wait_keep_no_document_text():
    """Edits of a large document while the model is busy elsewhere: each request is answered
    stale at once but waits in the queue until the worker reaches it, and must not hold its
    copy of the document meanwhile (`benchmarks/lsp_storm.py` saw the server grow by the size of
    a 10 MB document for each request typed in it)."""
    import gc
    import tracemalloc

    fake = FakeCompleter(step_seconds=0.005)
    engine = ready(fake)
    fake.tokens = 2000  # the model busy for seconds on another file
    busy = engine.submit(request("x = ", document="file:///busy.py"))
    assert fake.started.wait(5)
    tracemalloc.start()
    try:
        futures = []
        for i in range(20):  # 2 MB each, a new text every time, as after each edit
            futures.append(engine.submit(request("# " + "x" * 2_000_000 + f"\ny{i} = ", document="file:///big.py")))
        assert all(f.result(1).source == "stale" for f in futures[:-1])
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        busy.cancel()
        engine.close()
    assert held < 10 * 2**20, f"{held / 2**20:.0f} MiB held by 19 answered requests and the waiting one"
