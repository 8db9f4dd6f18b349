"""Bad settings are ignored key by key, each with one log line; the rest still applies."""
from __future__ import annotations

import logging

from lsp_server.engine import Settings


def test_a_nan_where_a_number_belongs_is_ignored_and_the_rest_kept(caplog):
    with caplog.at_level(logging.WARNING, logger="xtc-lsp"):
        s = Settings().updated({"xtc": {"maxNewTokens": float("nan"), "debounceMs": 0}})
    assert s.max_new_tokens == Settings().max_new_tokens and s.debounce_ms == 0
    assert len([r for r in caplog.records if "maxNewTokens" in r.getMessage()]) == 1


def test_settings_that_are_not_an_object_are_ignored_with_one_line(caplog):
    for raw in (["a"], "text", 3):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="xtc-lsp"):
            assert Settings().updated(raw) == Settings()
        assert len(caplog.records) == 1


def test_unknown_keys_are_warned_once_each_by_name(caplog):
    with caplog.at_level(logging.WARNING, logger="xtc-lsp"):
        Settings().updated({"xtc": {"maxNewTokenz": 9, "multiline": True}})
        Settings().updated({"xtc": {"maxNewTokenz": 9}})
    assert len([r for r in caplog.records if "maxNewTokenz" in r.getMessage()]) == 1
