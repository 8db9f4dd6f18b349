"""Latency of `xtc-lsp` as an editor sees it, over stdio against the real server.

    python benchmarks/lsp_latency.py [--model SRC] [--context-tokens 500] [--repeats 5] [--json]
                                     [--workspace DIR] [--no-workspace-context]

Measures
- process start -> first non-empty inline completion (the editor polls while the model loads),
- `initialized` -> model ready (the server's work-done progress `end`),
- an inline completion on a ~500-token context (cold: no prefix shared with the previous request),
- the same request after one typed character that is not the suggestion's start (a new
  inference re-using the KV cache of the unchanged prefix),
- the same request after typing the suggestion's first character (answered from the
  suggestion cache, no inference).
Contexts are windows of a real Python file (default: the standard library's argparse.py),
each starting elsewhere so that no two share a prefix. Not a test: prints a table, or JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sysconfig
import time
from pathlib import Path

from lsprotocol import types as t

from lsp_server.client import Client, end_of, server_command

SMALL = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return [line.rstrip() for line in "


def token_counter(src: str):
    """Counts tokens with the model's own tokenizer when it is on disk, else ~3.5 chars a token."""
    try:
        from transformers import AutoTokenizer

        from xtc.core.store import Store

        path = Store().default_path() if not src else (Store().resolve(src) or Path(src).expanduser())
        if path is not None and Path(path).is_dir():
            tokenizer = AutoTokenizer.from_pretrained(path)
            return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    except Exception:
        pass
    return lambda text: round(len(text) / 3.5)


def contexts(source: Path, n: int, tokens: int, count) -> list[tuple[str, str]]:
    """`n` windows of about `tokens` tokens, each cut mid-line; (text, the real next character)."""
    lines = source.read_text().splitlines(keepends=True)
    windows = []
    for i in range(n):
        start = i * max(1, len(lines) // (n + 1))
        text, j = "", start
        while j < len(lines) - 1 and count(text) < tokens:
            text += lines[j]
            j += 1
        while j < len(lines) - 1 and len(lines[j].strip()) < 12:  # cut inside a line with some code
            text += lines[j]
            j += 1
        line = lines[j]
        indent = len(line) - len(line.lstrip())
        cut = indent + max(1, (len(line.rstrip()) - indent) // 2)
        windows.append((text + line[:cut], line[cut:cut + 1]))
    return windows


async def run(args: argparse.Namespace) -> dict:
    count = token_counter(args.model)
    windows = contexts(args.source, args.repeats, args.context_tokens, count)
    ready_at: list[float] = []

    def note(method: str, params) -> None:
        if method == t.PROGRESS and isinstance(params, t.WorkDoneProgressEnd) and not ready_at:
            ready_at.append(time.perf_counter())

    client = Client(timeout=args.timeout, name="xtc-lsp-latency", on_notification=note)

    async def inline(uri: str, position: t.Position) -> tuple[str, float]:
        begin = time.perf_counter()
        suggestion = await client.suggestion(uri, position)
        return suggestion, (time.perf_counter() - begin) * 1000

    started = time.perf_counter()
    await client.start(server_command())
    try:
        options = {"xtc": {"model": args.model, "maxNewTokens": args.max_new_tokens,
                           "workspaceContext": args.workspace_context}}
        await client.initialize(options, [args.workspace] if args.workspace else None)
        initialized = time.perf_counter()

        client.open("file:///bench/small.py", SMALL)
        first = ""
        while not first:  # as an editor would, keep asking while the model loads
            if client.messages:
                raise SystemExit(f"server: {client.messages[0].message}")
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"no suggestion after {args.timeout} s")
            first, _ = await inline("file:///bench/small.py", end_of(SMALL))
            if not first:
                await asyncio.sleep(0.05)
        first_ms = (time.perf_counter() - started) * 1000
        ready_ms = ((ready_at[0] if ready_at else time.perf_counter()) - initialized) * 1000

        cold, typed, cached, prompt_tokens = [], [], [], []
        for i, (text, next_char) in enumerate(windows):
            uri = f"file:///bench/context{i}.py"
            client.open(uri, text)
            suggestion, ms = await inline(uri, end_of(text))
            cold.append(ms)
            prompt_tokens.append(count(text))
            # one typed character that is not the suggestion's start: a new inference on the cached prefix
            char = next((c for c in (next_char, " ", "x") if c and c.strip() != "" and c != suggestion[:1]), "x")
            client.change(uri, end_of(text), end_of(text), char)
            _, ms = await inline(uri, end_of(text + char))
            typed.append(ms)
            client.change(uri, end_of(text), end_of(text + char), "")
            if suggestion:  # typing the suggestion's first character: the suggestion cache
                await inline(uri, end_of(text))
                client.change(uri, end_of(text), end_of(text), suggestion[0])
                _, ms = await inline(uri, end_of(text + suggestion[0]))
                cached.append(ms)
    finally:
        await client.close()
    if client.returncode != 0:
        raise SystemExit(f"xtc-lsp exited with status {client.returncode}")
    median = lambda xs: round(statistics.median(xs), 1) if xs else None  # noqa: E731
    return {
        "model": args.model or "(installed default)",
        "workspace": str(args.workspace) if args.workspace else None,
        "workspace_context": args.workspace_context,
        "process_start_to_first_suggestion_ms": round(first_ms, 1),
        "initialized_to_model_ready_ms": round(ready_ms, 1),
        "context_tokens": round(statistics.median(prompt_tokens)),
        "cold_context_ms": median(cold),
        "typed_char_kv_reuse_ms": median(typed),
        "typed_suggestion_char_ms": median(cached),
        "repeats": len(windows),
        "samples_ms": {"cold": [round(x, 1) for x in cold], "typed": [round(x, 1) for x in typed],
                       "suggestion_cache": [round(x, 1) for x in cached]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model SRC (default: the installed default)")
    parser.add_argument("--context-tokens", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5, help="contexts measured (medians are reported)")
    parser.add_argument("--source", type=Path, default=Path(sysconfig.get_paths()["stdlib"]) / "argparse.py")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--workspace", type=Path, help="a workspace folder the server indexes for context")
    parser.add_argument("--no-workspace-context", dest="workspace_context", action="store_false",
                        help="the setting workspaceContext off (the file alone)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    rows = [
        ("process start -> first suggestion", result["process_start_to_first_suggestion_ms"]),
        ("initialized -> model ready", result["initialized_to_model_ready_ms"]),
        (f"~{result['context_tokens']}-token context, cold", result["cold_context_ms"]),
        ("after 1 typed char (KV cache reused)", result["typed_char_kv_reuse_ms"]),
        ("after typing the suggestion's 1st char", result["typed_suggestion_char_ms"]),
    ]
    print(f"xtc-lsp latency, model {result['model']} (medians of {result['repeats']} contexts)")
    for name, ms in rows:
        print(f"  {name:42} {ms:>9.1f} ms" if ms is not None else f"  {name:42} {'-':>9}")


if __name__ == "__main__":
    main()
