"""`benchmarks/lsp_storm.py` small, on a tiny model: keystrokes with completion requests over
several documents, a third cancelled, closes and reopens, edits past the end, a large change and
`untitled:` URIs. Every request is answered or cancelled, no answer is stale, the server still
suggests afterwards and exits with status 0 (docs/reliability.md, "Load")."""

from __future__ import annotations

import sys

from benchmarks.lsp_storm import storm
from tests.lsp_fixtures import server_env, tiny_models


async def test_a_small_storm_is_all_answered_or_cancelled_none_stale_and_exits_cleanly():
    models = tiny_models()
    r = await storm(100, 5, str(models.gpt2), command=[sys.executable, "-m", "lsp_server"],
                    env=server_env(models.home), big_mb=1, timeout=60)
    assert r["requests_sent"] == 100 + 2 + 1 + 2  # keystrokes, two while closed, the large change, untitled
    assert r["answered"] + r["cancelled"] == r["requests_sent"], r
    assert (r["errors"], r["unanswered"], r["stale_answers"]) == (0, 0, 0), r
    assert r["cancelled"] > 0 and r["suggestion_after_storm"], r
    assert r["rss_mib"]["peak"] >= r["rss_mib"]["start"] > 0
    assert r["exit_status"] == 0
