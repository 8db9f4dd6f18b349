-- Headless test of editors/nvim/xtc.lua's own ghost text against a language server with fixed
-- answers (tests/e2e/fake_inline_server.py):
--   XTC_FAKE_CMD='python tests/e2e/fake_inline_server.py' XTC_FAKE_LOG=requests.jsonl \
--   XTC_NVIM_RESULT=out.json nvim --headless -u NONE -c 'luafile tests/e2e/nvim_ghost_lsp.lua' a.py
-- Typing asks once, after ghost_debounce_ms, at the cursor in the negotiated units (Automatic); the
-- answer shows; words and lines are accepted, the closing bracket the server rewrites is not
-- doubled; a two-line answer shows its second line below and is accepted line by line;
-- an answer that comes after more typing is dropped; `ghost_text = false` asks nothing, maps no key.
-- Writes {ok, error, requests} to XTC_NVIM_RESULT; exits 0 on success, 1 on failure.

local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h:h')
local xtc = dofile(root .. '/editors/nvim/xtc.lua')
xtc.setup({ cmd = vim.split(assert(os.getenv('XTC_FAKE_CMD')), ' '), filetypes = { 'python' },
            ghost_debounce_ms = 150 })
local result = { nvim = tostring(vim.version().major .. '.' .. vim.version().minor) }
local uv = vim.uv or vim.loop

local h = dofile(root .. '/tests/e2e/nvim_harness.lua')(result, xtc)
local eq, sleep, wait_for = h.eq, h.sleep, h.wait_for

local function keys(k, mode)
  h.keys(k, mode, 30)
end

local function requests()
  local path = os.getenv('XTC_FAKE_LOG')
  if vim.fn.filereadable(path) == 0 then
    return {}
  end
  local found = {}
  for _, line in ipairs(vim.fn.readfile(path)) do
    table.insert(found, vim.fn.json_decode(line))
  end
  return found
end

local function marks()
  local ns = vim.api.nvim_get_namespaces()['xtc_ghost']
  return vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
end

local function lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end

local function test()
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { 'ö = f()' })
  vim.bo.filetype = 'python' -- -u NONE: no filetype detection; this attaches the server
  local client = wait_for(function()
    local c = xtc.clients()[1]
    return c and c.initialized ~= false and c.server_capabilities and c
  end, 20000, 'the client')
  result.encoding = client.offset_encoding -- 0.7: utf-16; 0.11 offers utf-8, which pygls takes

  -- typing 'abc' before the ')': one request, ghost_debounce_ms after the last key
  vim.api.nvim_win_set_cursor(0, { 1, 7 }) -- on the ')' ('ö' is two bytes)
  keys('i', 'n')
  local typed = uv.hrtime()
  vim.api.nvim_feedkeys('abc', 'mt', false)
  wait_for(function() return vim.b.xtc_ghost ~= '' end, 5000, 'the ghost text')
  result.shown_after_ms = (uv.hrtime() - typed) / 1e6
  result.requests = requests()
  eq(1, #result.requests, 'requests while typing abc')
  local character = ({ ['utf-8'] = 10, ['utf-16'] = 9, ['utf-32'] = 9 })[client.offset_encoding]
  eq({ line = 0, character = character, trigger = 2, before = 'ö = f(abc' }, result.requests[1], 'the request')
  if result.shown_after_ms < 150 then
    error(string.format('shown %.0f ms after typing, before ghost_debounce_ms', result.shown_after_ms), 0)
  end
  eq('_def, g)', vim.b.xtc_ghost, 'the ghost text')
  local m = marks()
  eq({ 0, 10 }, { m[1][2], m[1][3] }, 'at the cursor')
  eq(vim.fn.has('nvim-0.10') == 1 and 'inline' or 'overlay', m[1][4].virt_text_pos, 'position')

  keys('<M-Right>')
  eq({ 'ö = f(abc_def)' }, lines(), 'a word')
  eq(', g)', vim.b.xtc_ghost, 'the rest')
  keys('<M-Right>')
  eq({ 'ö = f(abc_def,)' }, lines(), 'a comma')
  keys('<M-C-Right>')
  eq({ 'ö = f(abc_def, g)' }, lines(), 'the line, its bracket rewritten')
  eq({ 1, 18 }, vim.api.nvim_win_get_cursor(0), 'cursor at the end')
  eq('', vim.b.xtc_ghost, 'all accepted')

  -- a two-line answer on a new line
  keys('<Esc>o', 'n')
  keys('y')
  wait_for(function() return vim.b.xtc_ghost ~= '' end, 5000, 'the two-line ghost text')
  eq('ield x\nreturn y', vim.b.xtc_ghost, 'two lines')
  m = marks()
  eq({ { { 'return y', 'Comment' } } }, m[1][4].virt_lines, 'the second line below')
  keys('<M-C-Right>')
  eq({ 'ö = f(abc_def, g)', 'yield x' }, lines(), 'the first line')
  eq('\nreturn y', vim.b.xtc_ghost, 'the second line still shown')
  keys('<Tab>')
  eq({ 'ö = f(abc_def, g)', 'yield x', 'return y' }, lines(), 'the rest')
  eq({ 3, 8 }, vim.api.nvim_win_get_cursor(0), 'cursor at its end')
  keys('<Esc>', 'n')

  -- an answer that comes after more typing is not shown (the fake server answers "slow" late)
  keys('o', 'n')
  keys('slow')
  wait_for(function() local r = requests(); return r[#r].before == 'slow' end, 5000, 'the request for slow')
  keys('x') -- typed while the server thinks
  sleep(1000)
  eq('', vim.b.xtc_ghost, 'the late answer for slow, after slowx was typed')
  eq('slowx', requests()[#requests()].before, 'asked again after x')
  keys('<Esc>', 'n')
  result.requests = requests()

  -- ghost_text = false: no ghost text, no keys; the completion item through omnifunc instead
  xtc.setup({ cmd = vim.split(os.getenv('XTC_FAKE_CMD'), ' '), filetypes = { 'python' }, ghost_text = false })
  vim.cmd('enew')
  vim.bo.filetype = 'python'
  wait_for(function() return vim.bo.omnifunc ~= '' end, 10000, 'the client in a second buffer')
  eq(nil, vim.b.xtc_ghost, 'ghost_text = false: b:xtc_ghost')
  for _, key in ipairs({ '<Tab>', '<M-Right>', '<M-C-Right>', '<C-]>' }) do
    local desc = vim.fn.maparg(key, 'i', false, true).desc or '' -- 0.11 maps <Tab> itself (snippets)
    eq(nil, desc:match('^xtc:'), 'ghost_text = false: ' .. key .. ' mapped')
  end
  keys('iabc')
  sleep(300)
  eq(#result.requests, #requests(), 'ghost_text = false: no request')
  keys('<Esc>', 'n')
end

h.run(test)
