"""One place for defaults and bounds: the VS Code settings schema and the server agree with it."""

import json
from pathlib import Path

import pytest

from lsp_server.engine import Settings
from xtc.cli import build_parser
from xtc.core import defaults

PACKAGE_JSON = Path(__file__).resolve().parents[1] / "vscode-client" / "package.json"
SETTINGS = {  # VS Code setting -> (default, bounds or None)
    "xtc.maxNewTokens": (defaults.MAX_NEW_TOKENS, defaults.MAX_NEW_TOKENS_BOUNDS),
    "xtc.contextTokens": (defaults.CONTEXT_TOKENS, defaults.CONTEXT_TOKENS_BOUNDS),
    "xtc.multiline": (defaults.MULTILINE, None),
    "xtc.debounceMs": (defaults.DEBOUNCE_MS, defaults.DEBOUNCE_MS_BOUNDS),
    "xtc.model": ("", None),
}


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_vscode_setting_defaults_and_bounds_are_the_core_defaults(key):
    schema = json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"][key]
    default, bounds = SETTINGS[key]
    assert schema["default"] == default
    if bounds is not None:
        assert (schema["minimum"], schema["maximum"]) == bounds


def test_the_server_and_the_cli_use_the_core_defaults():
    s = Settings()
    assert (s.max_new_tokens, s.context_tokens, s.multiline, s.debounce_ms) == (
        defaults.MAX_NEW_TOKENS, defaults.CONTEXT_TOKENS, defaults.MULTILINE, defaults.DEBOUNCE_MS)
    too_big = Settings().updated({"maxNewTokens": 10**6, "contextTokens": 1, "debounceMs": -5})
    assert too_big.max_new_tokens == defaults.MAX_NEW_TOKENS_BOUNDS[1]
    assert too_big.context_tokens == defaults.CONTEXT_TOKENS_BOUNDS[0]
    assert too_big.debounce_ms == defaults.DEBOUNCE_MS_BOUNDS[0]
    args = build_parser().parse_args(["eval", "--model", "m", "--benchmark", "b"])
    assert (args.max_new_tokens, args.context_tokens) == (defaults.MAX_NEW_TOKENS, defaults.CONTEXT_TOKENS)
