-- xtc.lua: offline code completion in Neovim (Python, JavaScript, Go, Rust, C... see `filetypes`),
-- from the `xtc-lsp` language server.
--
-- The server's suggestions show as ghost text while you type (`textDocument/inlineCompletion`):
-- on Neovim 0.12+ from `vim.lsp.inline_completion`, on 0.7 - 0.11 (which lack it) from this
-- module (extmarks, asked for `ghost_debounce_ms` after the last key). In insert mode <Tab>
-- accepts it all, <M-Right> its next word, <M-C-Right> the rest of its line, <C-]> dismisses
-- it (the last three: this module's ghost text only); with none shown each key does what it did.
-- Neovim 0.7 - 0.11 also get the suggestion as one completion item (`textDocument/completion`):
-- <C-x><C-o> (omnifunc), or automatically with nvim-cmp (source `nvim_lsp`, cmp-nvim-lsp's
-- capabilities are used when installed) or, on 0.11, `autotrigger = true` (vim.lsp.completion).
--
-- Install: copy this file to ~/.config/nvim/lua/xtc.lua and put in init.lua
--
--     require('xtc').setup({
--       -- cmd = { '/path/to/codegpt-xtc/.venv/bin/xtc-lsp' }, -- default: xtc-lsp on PATH, else pipx's
--       -- use_project_venv = true, -- run <root>/.venv/bin/xtc-lsp of the file's project (trusted projects only)
--       settings = { model = '', maxNewTokens = 48, contextTokens = 1024, multiline = false, debounceMs = 0,
--                    workspaceContext = true, contextExclude = {} },  -- contextExclude: .gitignore patterns
--       -- filetypes = { 'python', 'lua' },  -- default: common languages (M.defaults.filetypes)
--       -- ghost_text = true, ghost_debounce_ms = 100, accept_key = '<Tab>', accept_word_key = '<M-Right>',
--       -- accept_line_key = '<M-C-Right>', dismiss_key = '<C-]>',  -- false: no mapping
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
  ghost_text = true, -- suggestions as ghost text while typing in insert mode; false = off
  ghost_debounce_ms = 100, -- Neovim < 0.12: ask this long after the last key typed
  ghost_hl = 'Comment', -- the ghost text's highlight group
  native_inline_completion = true, -- Neovim 0.12+: vim.lsp.inline_completion's ghost text; false = ours
  -- Insert-mode keys (false = no mapping); each does what it did before when no ghost text is shown.
  accept_key = '<Tab>', -- accepts the whole ghost text
  accept_word_key = '<M-Right>', -- accepts its next word (our ghost text only, not 0.12's native one)
  accept_line_key = '<M-C-Right>', -- accepts the rest of its current line (our ghost text only)
  dismiss_key = '<C-]>', -- hides it (our ghost text only)
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

-- Ghost text of our own (Neovim 0.7 - 0.11, which have no vim.lsp.inline_completion; on 0.12+ with
-- `native_inline_completion = false`): after typing in insert mode, debounced, ask the server for
-- `textDocument/inlineCompletion` and show the first item as virtual text (extmarks) at the cursor.

local ghost_ns = vim.api.nvim_create_namespace('xtc_ghost')
local ghosts = {} -- bufnr -> { client_id, text, replace (bytes after the cursor it rewrites), row, col, tick }
local ghost_timer = nil
local ghost_seq = 0 -- the latest request; older answers are dropped

local function call(client, method, ...) -- client:method(...) on 0.11+, client.method(...) before
  if has('0.11') then
    return client[method](client, ...)
  end
  return client[method](...)
end

-- The LSP units (`encoding`) of the string `s`, and the byte offset of `units` units into `line`.
local function units_of(s, encoding)
  if encoding == 'utf-8' then
    return #s
  end
  local n = 0
  for ch in s:gmatch('[^\128-\191][\128-\191]*') do
    n = n + ((encoding ~= 'utf-32' and #ch == 4) and 2 or 1)
  end
  return n
end

local function byte_of(line, units, encoding)
  if encoding == 'utf-8' then
    return math.min(units, #line)
  end
  local n, b = 0, 0
  for ch in line:gmatch('[^\128-\191][\128-\191]*') do
    if n >= units then
      break
    end
    n = n + ((encoding ~= 'utf-32' and #ch == 4) and 2 or 1)
    b = b + #ch
  end
  return b
end

local function split_lines(text)
  local lines, start = {}, 1
  while true do
    local nl = text:find('\n', start, true)
    if not nl then
      table.insert(lines, text:sub(start))
      return lines
    end
    table.insert(lines, text:sub(start, nl - 1))
    start = nl + 1
  end
end

--- The next word of a suggestion, what accept-word inserts: leading blanks, then a run of word
--- characters (letters, digits, _, any non-ASCII) or else a run of other non-blank characters;
--- at a line break, the line break and the next line's indentation.
function M.next_word(text)
  if text:sub(1, 1) == '\n' then
    return text:match('^\n[ \t]*')
  end
  local blanks = text:match('^[ \t]*')
  local rest = text:sub(#blanks + 1)
  return blanks .. (rest:match('^[%w_\128-\255]+') or rest:match('^[^%w_\128-\255%s]+') or '')
end

--- The rest of the suggestion's current line, what accept-line inserts; at a line break, the line
--- break and the whole next line.
function M.next_line(text)
  local from = text:sub(1, 1) == '\n' and 2 or 1
  local nl = text:find('\n', from, true)
  return nl and text:sub(1, nl - 1) or text
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function set_ghost_var(bufnr, text)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_set_var(bufnr, 'xtc_ghost', text)
  end
end

--- Hide the ghost text of `bufnr` (default: the current buffer).
function M.clear_ghost(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local g = ghosts[bufnr]
  if g then
    g.text, g.tick = nil, nil
  end
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, ghost_ns, 0, -1)
  end
  set_ghost_var(bufnr, '')
end

-- Draw g.text at (g.row, g.col): the first line inline (0.10+) or, before, over the rest of the
-- line (the rest redrawn after it) or after its end; the other lines as virtual lines below.
local function render(bufnr, g)
  vim.api.nvim_buf_clear_namespace(bufnr, ghost_ns, 0, -1)
  local hl = M.config.ghost_hl
  local lines = {}
  for i, l in ipairs(split_lines(g.text)) do
    lines[i] = l:gsub('\t', string.rep(' ', vim.bo[bufnr].tabstop))
  end
  local opts = { hl_mode = 'combine' }
  local line = vim.api.nvim_buf_get_lines(bufnr, g.row, g.row + 1, false)[1] or ''
  if lines[1] ~= '' then
    if has('0.10') then
      opts.virt_text, opts.virt_text_pos = { { lines[1], hl } }, 'inline'
    elseif g.col >= #line then
      opts.virt_text, opts.virt_text_pos = { { lines[1], hl } }, 'eol'
    else
      opts.virt_text = { { lines[1], hl }, { line:sub(g.col + 1), 'Normal' } }
      opts.virt_text_pos = 'overlay'
    end
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], hl } })
    end
  end
  vim.api.nvim_buf_set_extmark(bufnr, ghost_ns, g.row, g.col, opts)
  set_ghost_var(bufnr, g.text)
end

--- Show `text` as the ghost text at the cursor of the current buffer; `replace` bytes after the
--- cursor are rewritten when it is accepted in full (the closing brackets the server rewrites).
function M.show_ghost(text, replace)
  local bufnr = vim.api.nvim_get_current_buf()
  ghosts[bufnr] = ghosts[bufnr] or {}
  local g = ghosts[bufnr]
  if text == nil or text == '' then
    return M.clear_ghost(bufnr)
  end
  g.text, g.replace = text, replace or 0
  g.row, g.col = cursor()
  g.tick = vim.api.nvim_buf_get_changedtick(bufnr)
  render(bufnr, g)
end

-- The ghost text shown in the current buffer, when still where it was shown.
local function shown()
  local bufnr = vim.api.nvim_get_current_buf()
  local g = ghosts[bufnr]
  if not g or not g.text then
    return nil
  end
  local row, col = cursor()
  if row ~= g.row or col ~= g.col or vim.api.nvim_buf_get_changedtick(bufnr) ~= g.tick then
    return nil
  end
  return g, bufnr
end

--- Accept the shown ghost text: how = 'all' (default), 'word' (M.next_word) or 'line'
--- (M.next_line); the rest stays shown. False when no ghost text is shown.
function M.accept(how)
  local g, bufnr = shown()
  if not g then
    return false
  end
  local part = g.text
  if how == 'word' then
    part = M.next_word(g.text)
  elseif how == 'line' then
    part = M.next_line(g.text)
  end
  if part == '' then
    part = g.text
  end
  local rest = g.text:sub(#part + 1)
  local line = vim.api.nvim_buf_get_lines(bufnr, g.row, g.row + 1, false)[1] or ''
  local replace = rest == '' and math.min(g.replace, #line - g.col) or 0
  local lines = split_lines(part)
  vim.api.nvim_buf_set_text(bufnr, g.row, g.col, g.row, g.col + replace, lines)
  local row = g.row + #lines - 1
  local col = (#lines == 1 and g.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  if rest == '' then
    M.clear_ghost(bufnr) -- the edit asks for the next suggestion
  else
    g.text, g.row, g.col = rest, row, col
    g.tick = vim.api.nvim_buf_get_changedtick(bufnr) -- our own edit: keep the rest shown
    render(bufnr, g)
  end
  return true
end

--- Hide the shown ghost text; false when none is shown.
function M.dismiss()
  if not shown() then
    return false
  end
  M.clear_ghost()
  return true
end

local function item_text(item)
  local text = item.insertText
  if type(text) == 'table' then
    text = text.value
  end
  return type(text) == 'string' and text or ''
end

--- Ask the server for a suggestion at the cursor and show it (triggerKind 1 = Invoked when
--- `invoked`, else 2 = Automatic, as after typing).
function M.request_ghost(invoked)
  local bufnr = vim.api.nvim_get_current_buf()
  local g = ghosts[bufnr]
  local client = g and g.client_id and vim.lsp.get_client_by_id(g.client_id)
  if not client then
    return
  end
  if g.request_id then
    call(client, 'cancel_request', g.request_id)
    g.request_id = nil
  end
  ghost_seq = ghost_seq + 1
  local seq = ghost_seq
  local row, col = cursor()
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  local encoding = client.offset_encoding or 'utf-16'
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = row, character = units_of(line:sub(1, col), encoding) },
    context = { triggerKind = invoked and 1 or 2 },
  }
  local ok, id = call(client, 'request', 'textDocument/inlineCompletion', params, function(err, result)
    if seq ~= ghost_seq then
      return
    end
    g.request_id = nil
    if err or not vim.api.nvim_buf_is_valid(bufnr) then
      return
    end
    local r, c = cursor()
    if vim.api.nvim_get_current_buf() ~= bufnr or r ~= row or c ~= col
      or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick or not vim.fn.mode():match('^i') then
      return -- typed on since: a newer request comes
    end
    local items = (result and result ~= vim.NIL) and (result.items or result) or {}
    local item = items[1]
    local text = item and item_text(item) or ''
    local replace = 0
    if item and item.range and item.range['end'].line == row then
      replace = math.max(0, byte_of(line, item.range['end'].character, encoding) - col)
    end
    M.show_ghost(text, replace)
  end, bufnr)
  if ok then
    g.request_id = id
  end
end

local function on_text_changed(bufnr)
  local g = ghosts[bufnr]
  if g and g.text and vim.api.nvim_buf_get_changedtick(bufnr) == g.tick then
    return -- our own edit (a word or line accepted)
  end
  M.clear_ghost(bufnr)
  ghost_timer = ghost_timer or uv.new_timer()
  ghost_timer:stop()
  ghost_timer:start(M.config.ghost_debounce_ms, 0, vim.schedule_wrap(function()
    if vim.api.nvim_get_current_buf() == bufnr and vim.fn.mode():match('^i') then
      M.request_ghost(false)
    end
  end))
end

local function feed(keys, mode)
  vim.api.nvim_feedkeys(keys, mode, false)
end

local function termcodes(keys)
  return vim.api.nvim_replace_termcodes(keys, true, false, true)
end

-- Do what `key` did before our mapping: `previous` is maparg()'s dictionary of the mapping we
-- replaced (a user's, a plugin's, Neovim's own <Tab> for snippets), else empty: the key itself.
-- Neovim 0.7's maparg gives a Lua mapping's function as a number, which cannot be called: the key.
local function fallback(key, previous)
  local mode = previous.noremap == 0 and 'im' or 'in'
  local ok = pcall(function()
    if type(previous.callback) == 'function' then
      if previous.expr ~= 1 then
        return previous.callback()
      end
      local keys = previous.callback()
      if type(keys) == 'string' and keys ~= '' then
        feed(previous.replace_keycodes == 1 and termcodes(keys) or keys, mode)
      end
    elseif previous.callback == nil and previous.rhs and previous.rhs ~= '' then
      local keys = previous.expr == 1 and vim.api.nvim_eval(previous.rhs) or termcodes(previous.rhs)
      feed(keys, keys == termcodes(key) and 'in' or mode)
    else
      error('no mapping to call')
    end
  end)
  if not ok then
    feed(termcodes(key), 'in')
  end
end

local function ghost_map(bufnr, key, fn, desc)
  if not key then
    return
  end
  local previous = vim.api.nvim_buf_call(bufnr, function()
    return vim.fn.maparg(key, 'i', false, true)
  end)
  if (previous.desc or ''):match('^xtc:') then -- ours, from an earlier attach
    previous = {}
  end
  vim.keymap.set('i', key, function()
    if not fn() then -- nothing shown: the key does what it did without us
      fallback(key, previous)
    end
  end, { buffer = bufnr, desc = desc })
end

--- Our ghost text for `bufnr`, from the client `client_id` (nil: shown by M.show_ghost only).
function M.enable_ghost(bufnr, client_id)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  ghosts[bufnr] = ghosts[bufnr] or {}
  ghosts[bufnr].client_id = client_id
  set_ghost_var(bufnr, '')
  local group = vim.api.nvim_create_augroup('xtc_ghost_' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd('TextChangedI', { group = group, buffer = bufnr, callback = function()
    on_text_changed(bufnr)
  end })
  vim.api.nvim_create_autocmd('CursorMovedI', { group = group, buffer = bufnr, callback = function()
    local g = ghosts[bufnr]
    if g and g.text and not shown() then
      M.clear_ghost(bufnr)
    end
  end })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, { group = group, buffer = bufnr, callback = function()
    if ghost_timer then
      ghost_timer:stop()
    end
    ghost_seq = ghost_seq + 1 -- drop answers on their way
    local g = ghosts[bufnr]
    local client = g and g.request_id and g.client_id and vim.lsp.get_client_by_id(g.client_id)
    if client then
      call(client, 'cancel_request', g.request_id)
      g.request_id = nil
    end
    M.clear_ghost(bufnr)
  end })
  vim.api.nvim_create_autocmd('BufWipeout', { group = group, buffer = bufnr, callback = function()
    ghosts[bufnr] = nil
  end })
  ghost_map(bufnr, M.config.accept_key, function() return M.accept('all') end, 'xtc: accept the ghost text')
  ghost_map(bufnr, M.config.accept_word_key, function() return M.accept('word') end, 'xtc: accept the next word')
  ghost_map(bufnr, M.config.accept_line_key, function() return M.accept('line') end, 'xtc: accept the line')
  ghost_map(bufnr, M.config.dismiss_key, M.dismiss, 'xtc: dismiss the ghost text')
end

local function on_attach(client, bufnr)
  local native = M.config.ghost_text and M.config.native_inline_completion and vim.lsp.inline_completion
  if M.config.ghost_text and not native then -- Neovim < 0.12: our own ghost text
    M.enable_ghost(bufnr, client.id)
  end
  if native then -- Neovim 0.12+: ghost text
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
