"""One place for defaults and bounds: the VS Code settings schema and the server agree with it."""

import json
from pathlib import Path

import pytest

from lsp_server.engine import Settings
from xtc.cli import build_parser
from xtc.core import defaults

REPO = Path(__file__).resolve().parents[1]
PACKAGE_JSON = REPO / "vscode-client" / "package.json"
SETTINGS = {  # VS Code setting -> (default, bounds or None)
    "xtc.maxNewTokens": (defaults.MAX_NEW_TOKENS, defaults.MAX_NEW_TOKENS_BOUNDS),
    "xtc.contextTokens": (defaults.CONTEXT_TOKENS, defaults.CONTEXT_TOKENS_BOUNDS),
    "xtc.multiline": (defaults.MULTILINE, None),
    "xtc.debounceMs": (defaults.DEBOUNCE_MS, defaults.DEBOUNCE_MS_BOUNDS),
    "xtc.model": ("", None),
    "xtc.workspaceContext": (defaults.WORKSPACE_CONTEXT, None),
    "xtc.contextExclude": ([], None),
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


def test_vscode_completes_the_core_default_languages():
    """VS Code's `xtc.languages` (package.json and the extension's code)."""
    import re

    manifest = json.loads(PACKAGE_JSON.read_text())
    assert tuple(manifest["contributes"]["configuration"]["properties"]["xtc.languages"]["default"]) == defaults.LANGUAGES
    settings_ts = (REPO / "vscode-client" / "src" / "settings.ts").read_text()
    listed = re.search(r"DEFAULT_LANGUAGES: readonly string\[\] = \[(.*?)\];", settings_ts, re.S).group(1)
    assert tuple(re.findall(r"'([^']+)'", listed)) == defaults.LANGUAGES
    assert {f"onLanguage:{language}" for language in defaults.LANGUAGES} <= set(manifest["activationEvents"])
    assert "python" in defaults.LANGUAGES and "javascript" in defaults.NVIM_FILETYPES


def test_neovim_completes_the_core_default_filetypes():
    """The module as Neovim loads it: `defaults.filetypes` of editors/nvim/xtc.lua, evaluated."""
    import shutil
    import subprocess

    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("Neovim is not installed")
    lua = "io.stdout:write(vim.fn.json_encode(dofile('editors/nvim/xtc.lua').defaults.filetypes))"
    proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"lua {lua}", "-c", "qa!"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert tuple(json.loads(proc.stdout)) == defaults.NVIM_FILETYPES
