-- xtc.lua: offline code completion in Neovim (Python, JavaScript, Go, Rust, C... see `filetypes`),
-- from the `xtc-lsp` language server.
--
-- Neovim 0.12+ shows the server's suggestions as ghost text (`textDocument/inlineCompletion`,
-- `vim.lsp.inline_completion`); <Tab> accepts, when a suggestion is shown.
-- Neovim 0.7 - 0.11 have no inline completion: the same suggestion comes as one completion item
-- (`textDocument/completion`): <C-x><C-o> (omnifunc), or automatically with nvim-cmp
-- (source `nvim_lsp`, cmp-nvim-lsp's capabilities are used when installed) or, on 0.11,
-- `autotrigger = true` (vim.lsp.completion).
--
-- Install: copy this file to ~/.config/nvim/lua/xtc.lua and put in init.lua
--
--     require('xtc').setup({
--       -- cmd = { '/path/to/codegpt-xtc/.venv/bin/xtc-lsp' }, -- default: xtc-lsp on PATH, else pipx's
--       -- use_project_venv = true, -- run <root>/.venv/bin/xtc-lsp of the file's project (trusted projects only)
--       settings = { model = '', maxNewTokens = 48, contextTokens = 1024, multiline = false, debounceMs = 0,
--                    workspaceContext = true, contextExclude = {} },  -- contextExclude: .gitignore patterns
--       -- filetypes = { 'python', 'lua' },  -- default: common languages (M.defaults.filetypes)
--     })
--
-- or, without copying it: `local xtc = dofile('/path/to/editors/nvim/xtc.lua'); xtc.setup({...})`.
-- Opening a file never runs a program from its project: the server is `cmd`, else (only with
-- `use_project_venv = true`) the project's own `.venv/bin/xtc-lsp`, else `xtc-lsp` on PATH, else
-- pipx's ($PIPX_BIN_DIR, default ~/.local/bin); none found: one message says how to install it.
-- Change settings later with `require('xtc').configure({ model = 'smollm2' })`: the server gets
-- `workspace/didChangeConfiguration` (section `xtc`) and loads the new model.
-- Works on Neovim 0.7 and newer (tested headless on 0.7.2 and 0.11.4 by tests/e2e/test_nvim.py).

local M = {}

M.defaults = {
  -- list: program and arguments; nil = found: the project's (see use_project_venv), else xtc-lsp
  -- on PATH, else pipx's ($PIPX_BIN_DIR, ~/.local/bin)
  cmd = nil,
  -- true: start <root>/.venv/bin/xtc-lsp of the file's project when executable. Off by default:
  -- opening a downloaded repository must not run a program from it.
  use_project_venv = false,
  -- Filetypes that get completions (the languages of VS Code's `xtc.languages` default, by their
  -- Neovim names; xtc/core/defaults.py NVIM_FILETYPES holds the same list).
  filetypes = {
    'python', 'javascript', 'typescript', 'javascriptreact', 'typescriptreact', 'go', 'rust', 'java', 'kotlin',
    'swift', 'c', 'cpp', 'cs', 'ruby', 'php', 'lua', 'perl', 'r', 'sh', 'bash', 'zsh', 'ps1', 'sql', 'html', 'css',
    'scss', 'json', 'jsonc', 'yaml', 'toml', 'markdown', 'dockerfile', 'make',
  },
  root_markers = { '.git', 'pyproject.toml', 'setup.py', '.venv' },
  settings = {}, -- the `xtc` section: model, maxNewTokens, contextTokens, multiline, debounceMs,
  -- workspaceContext (other buffers and the project's files as context), contextExclude
  accept_key = '<Tab>', -- Neovim 0.12+: accepts the ghost text (falls back to the key itself); false = no mapping
  omnifunc = true, -- Neovim < 0.12: set 'omnifunc' so that <C-x><C-o> asks xtc
  autotrigger = false, -- Neovim 0.11: vim.lsp.completion with automatic pop-up
  on_attach = nil, -- function(client, bufnr) called after ours
}

M.config = vim.deepcopy(M.defaults)

local uv = vim.uv or vim.loop

local function has(version)
  return vim.fn.has('nvim-' .. version) == 1
end

--- The directory of `path` holding one of the root markers, else the current directory.
function M.root_dir(path)
  local dir = (path ~= nil and path ~= '') and vim.fn.fnamemodify(path, ':p:h') or uv.cwd()
  while dir and dir ~= '' do
    for _, marker in ipairs(M.config.root_markers) do
      if uv.fs_stat(dir .. '/' .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ':h')
    if parent == dir then
      break
    end
    dir = parent
  end
  return uv.cwd()
end

-- Where pipx puts the programs it installs: $PIPX_BIN_DIR, by default ~/.local/bin.
local function pipx_bin_dir()
  local dir = os.getenv('PIPX_BIN_DIR')
  if dir and dir ~= '' then
    return dir
  end
  return vim.fn.expand('~/.local/bin')
end

--- The command that starts the server for a project at `root`: `cmd`, else (with
--- `use_project_venv`) <root>/.venv/bin/xtc-lsp, else xtc-lsp on PATH, else pipx's; nil if none.
function M.server_cmd(root)
  if M.config.cmd then
    return M.config.cmd
  end
  if M.config.use_project_venv then
    local venv = root .. '/.venv/bin/xtc-lsp'
    if vim.fn.executable(venv) == 1 then
      return { venv }
    end
  end
  local on_path = vim.fn.exepath('xtc-lsp')
  if on_path ~= '' then
    return { on_path }
  end
  local pipx = pipx_bin_dir() .. '/xtc-lsp'
  if vim.fn.executable(pipx) == 1 then
    return { pipx }
  end
  return nil
end

--- The one-line message shown when no xtc-lsp is found.
function M.install_hint()
  return 'xtc: xtc-lsp not found (not on PATH, not in ' .. pipx_bin_dir()
    .. '): install it with `pipx install codegpt-xtc`, or set `cmd` in require(\'xtc\').setup()'
end

local warned = false -- the install hint is shown once per session, not for every buffer

local function capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  local ok, cmp_lsp = pcall(require, 'cmp_nvim_lsp')
  if ok then
    caps = vim.tbl_deep_extend('force', caps, cmp_lsp.default_capabilities())
  end
  return caps
end

local function on_attach(client, bufnr)
  if vim.lsp.inline_completion then -- Neovim 0.12+: ghost text
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    if M.config.accept_key then
      vim.keymap.set('i', M.config.accept_key, function()
        if not vim.lsp.inline_completion.get() then
          return M.config.accept_key
        end
      end, { expr = true, buffer = bufnr, desc = 'xtc: accept the inline completion' })
    end
  elseif M.config.autotrigger and vim.lsp.completion then -- Neovim 0.11
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = true })
  elseif M.config.omnifunc then
    vim.bo[bufnr].omnifunc = 'v:lua.vim.lsp.omnifunc'
  end
  if M.config.on_attach then
    M.config.on_attach(client, bufnr)
  end
end

local clients = {} -- root -> client id (Neovim 0.7, which has no vim.lsp.start)

--- Start (or reuse) the server for a buffer and attach it.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local root = M.root_dir(vim.api.nvim_buf_get_name(bufnr))
  local cmd = M.server_cmd(root)
  if not cmd then
    if not warned then
      warned = true
      vim.notify(M.install_hint(), vim.log.levels.WARN)
    end
    return nil
  end
  local settings = vim.deepcopy(M.config.settings)
  local config = {
    name = 'xtc',
    cmd = cmd,
    root_dir = root,
    init_options = settings, -- initializationOptions
    settings = { xtc = settings }, -- answers workspace/configuration for section `xtc`
    capabilities = capabilities(),
    on_attach = on_attach,
  }
  if vim.lsp.start then -- Neovim 0.8+: reuses a running client with the same name and root
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  local id = clients[root]
  if not id or not vim.lsp.get_client_by_id(id) then
    id = vim.lsp.start_client(config)
    clients[root] = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

--- The running xtc clients.
function M.clients()
  local found = {}
  local all = vim.lsp.get_clients and vim.lsp.get_clients({ name = 'xtc' }) or vim.lsp.get_active_clients()
  for _, client in pairs(all) do
    if client.name == 'xtc' then
      table.insert(found, client)
    end
  end
  return found
end

--- Change settings (e.g. `{ model = 'smollm2' }`) and tell the running servers.
function M.configure(settings)
  M.config.settings = vim.tbl_extend('force', M.config.settings, settings or {})
  for _, client in ipairs(M.clients()) do
    client.config.settings = { xtc = vim.deepcopy(M.config.settings) }
    local params = { settings = client.config.settings }
    if has('0.11') then
      client:notify('workspace/didChangeConfiguration', params)
    else
      client.notify('workspace/didChangeConfiguration', params)
    end
  end
end

function M.setup(opts)
  opts = opts or {}
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts)
  for _, key in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do -- lists replace the default, never merge into it
    if opts[key] ~= nil then
      M.config[key] = vim.deepcopy(opts[key])
    end
  end
  local group = vim.api.nvim_create_augroup('xtc', { clear = true })
  if #M.config.filetypes > 0 then
    vim.api.nvim_create_autocmd('FileType', {
      group = group,
      pattern = M.config.filetypes,
      callback = function(args)
        M.attach(args.buf)
      end,
    })
  end
  return M
end

return M
