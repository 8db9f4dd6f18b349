-- Headless Neovim end-to-end test of editors/nvim/xtc.lua against the real xtc-lsp:
--   XTC_LSP=... XTC_MODEL=... XTC_NVIM_RESULT=out.json \
--     nvim --headless -u tests/e2e/nvim_init.lua -c 'luafile tests/e2e/nvim_e2e.lua' sample.py
-- (XTC_NVIM_FILETYPE=javascript with sample.js: the same in JavaScript)
-- 1. the config starts the server for the buffer (Python or JavaScript) and attaches it;
-- 2. `textDocument/inlineCompletion` (vim.lsp.buf_request_sync, Automatic) after an edit gives a
--    suggestion (retried while the model loads, bounded by XTC_NVIM_TIMEOUT seconds);
-- 3. `textDocument/completion` (Invoked) gives the same suggestion as a completion item;
-- 4. Neovim < 0.12: <C-x><C-o> in insert mode (the omnifunc the config set) inserts it;
--    Neovim 0.12+: inline completion is enabled and <Tab> accepts the ghost text;
-- 5. Neovim < 0.12: typing shows the module's own ghost text (b:xtc_ghost, an extmark), and
--    <M-Right>, <M-C-Right>, <Tab> insert its next word, the rest of its line, all of it.
-- Writes a JSON report to XTC_NVIM_RESULT and exits 0 on success, 1 on failure.

local result = { nvim = tostring(vim.version().major .. '.' .. vim.version().minor .. '.' .. vim.version().patch), steps = {} }
local uv = vim.uv or vim.loop
local started = uv.hrtime()
local timeout_s = tonumber(os.getenv('XTC_NVIM_TIMEOUT') or '90')
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h:h')
local xtc = dofile(root .. '/editors/nvim/xtc.lua')

local function elapsed()
  return (uv.hrtime() - started) / 1e9
end

local function log(msg)
  io.stderr:write(string.format('[nvim-e2e %.1fs] %s\n', elapsed(), msg))
end

local h = dofile(root .. '/tests/e2e/nvim_harness.lua')(result, xtc, function(ok, err)
  result.seconds = elapsed()
  log(ok and 'OK' or ('FAILED: ' .. tostring(err)))
end)
local finish, sleep = h.finish, h.sleep

local function check(cond, msg)
  if not cond then
    error(msg, 0)
  end
end

local function wait_for(cond, ms, what)
  return h.wait_for(cond, ms, what, 100)
end

local function request(method, params, ms)
  local responses, err = vim.lsp.buf_request_sync(0, method, params, ms or 10000)
  check(responses, method .. ': ' .. tostring(err))
  for _, response in pairs(responses) do
    check(not response.error and not response.err, method .. ' error: ' .. vim.inspect(response.error or response.err))
    return response.result
  end
  return nil
end

local function items_of(res)
  if res == nil or res == vim.NIL then
    return {}
  end
  return res.items or res
end

local function keys(k) -- typed as a user would: the config's mappings apply
  h.keys(k)
end

local function current_line()
  return vim.api.nvim_get_current_line()
end

-- Type `first`, then the characters of `more` one at a time, until a ghost text shows (the tiny
-- model may have nothing to say after some); its text.
local function ghost_after(first, more)
  for i = 0, #more do
    local typed = i == 0 and first or more:sub(i, i)
    keys(typed)
    local deadline = elapsed() + (i == 0 and 30 or 10)
    while elapsed() < deadline do
      sleep(50)
      local text = vim.b.xtc_ghost
      if text and text ~= '' then
        return text
      end
    end
    log(string.format('no ghost text after typing %q', typed))
  end
  error('no ghost text after typing ' .. first .. more, 0)
end

-- The buffer's text from `row` (0-based) to the cursor.
local function text_to_cursor(bufnr, row)
  local pos = vim.api.nvim_win_get_cursor(0)
  local lines = vim.api.nvim_buf_get_lines(bufnr, row, pos[1], false)
  lines[#lines] = lines[#lines]:sub(1, pos[2])
  return table.concat(lines, '\n')
end

local function ghost_text(bufnr, filetype)
  check(vim.b[bufnr].xtc_ghost == '', 'b:xtc_ghost is not set (no ghost text?)')
  local last = vim.api.nvim_buf_line_count(bufnr)
  vim.api.nvim_buf_set_lines(bufnr, last, last, false, { '' })
  vim.api.nvim_win_set_cursor(0, { last + 1, 0 })
  vim.api.nvim_feedkeys('A', 'n', false)
  sleep(100)
  local ghost = ghost_after(filetype == 'python' and 'total = ' or 'const total = ', 'x y')
  local expected = text_to_cursor(bufnr, last)
  result.ghost = ghost
  result.steps.ghost = elapsed()
  log(string.format('ghost text after %q: %q', expected, ghost))
  local ns = vim.api.nvim_get_namespaces()['xtc_ghost']
  check(ns and #vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, {}) == 1, 'the ghost text has no extmark')

  -- <M-Right>: a word; <M-C-Right>: the line; <Tab>: all. A step that leaves nothing shown types on.
  result.accepted = {}
  for _, step in ipairs({ { 'word', '<M-Right>' }, { 'line', '<M-C-Right>' }, { 'all', '<Tab>' } }) do
    local how, key = step[1], step[2]
    if vim.b.xtc_ghost == '' then
      ghost = ghost_after(' ', 'x y')
      expected = text_to_cursor(bufnr, last)
    end
    local part = how == 'word' and xtc.next_word(ghost) or how == 'line' and xtc.next_line(ghost) or ghost
    keys(key)
    sleep(30) -- less than ghost_debounce_ms: an accept that leaves nothing asks for the next one
    expected = expected .. part
    local got = text_to_cursor(bufnr, last)
    check(got == expected, string.format('accept %s of %q: %q, not %q', how, ghost, got, expected))
    check(vim.b.xtc_ghost == ghost:sub(#part + 1), string.format('after accept %s of %q the ghost text is %q',
      how, ghost, vim.b.xtc_ghost))
    table.insert(result.accepted, { how = how, ghost = ghost, inserted = part })
    log(string.format('accept %s: %q', how, part))
    ghost = vim.b.xtc_ghost
  end
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<Esc>', true, false, true), 'n', false)
  wait_for(function()
    return vim.fn.mode() == 'n'
  end, 5000, 'normal mode')
  check(vim.b.xtc_ghost == '', 'the ghost text outlives insert mode')
  result.ghost_lines = vim.api.nvim_buf_get_lines(bufnr, last, -1, false)
  result.steps.ghost_accepted = elapsed()
end

local function test()
  vim.opt.showmode = false
  local bufnr = vim.api.nvim_get_current_buf()
  local filetype = os.getenv('XTC_NVIM_FILETYPE') or 'python'
  check(vim.bo[bufnr].filetype == filetype, 'the buffer is not ' .. filetype .. ': ' .. vim.bo[bufnr].filetype)
  result.filetype = filetype

  -- 1. attached and initialised
  local client = wait_for(function()
    local c = xtc.clients()[1]
    return c and c.initialized ~= false and (c.server_capabilities or c.resolved_capabilities) and c
  end, 30000, 'the xtc client')
  local caps = client.server_capabilities
  check(caps.inlineCompletionProvider, 'server does not advertise inlineCompletionProvider')
  check(caps.completionProvider, 'server does not advertise completionProvider')
  result.steps.attached = elapsed()
  log('attached: ' .. table.concat(client.config.cmd, ' '))

  -- An edit, sent to the server as didChange: a new function header and an indented line.
  local header = filetype == 'python' and 'def split(self, text):' or 'function split(text) {'
  local last = vim.api.nvim_buf_line_count(bufnr)
  vim.api.nvim_buf_set_lines(bufnr, last, last, false, { header, '    ' })
  local row = last + 1 -- 0-based row of the indented line
  local col = 4
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  local position = { line = row, character = col }
  local doc = { uri = vim.uri_from_bufnr(bufnr) }

  -- 2. inline completion, retried while the model loads
  local inline
  local tries = 0
  wait_for(function()
    tries = tries + 1
    local items = items_of(request('textDocument/inlineCompletion',
      { textDocument = doc, position = position, context = { triggerKind = 1 } }))
    local text = items[1] and items[1].insertText
    if type(text) == 'table' then
      text = text.value
    end
    if text and text:match('%S') then
      inline = items[1]
      inline.text = text
      return true
    end
    return false
  end, timeout_s * 1000, 'an inline completion')
  result.inline = inline.text
  result.inline_tries = tries
  result.steps.inline = elapsed()
  log(string.format('inline completion after %d request(s): %q', tries, inline.text))
  if inline.range then
    check(inline.range.start.line == row and inline.range.start.character == col,
      'inline completion range does not start at the cursor: ' .. vim.inspect(inline.range))
  end

  -- 3. completion: the same suggestion as one item
  local items = items_of(request('textDocument/completion',
    { textDocument = doc, position = position, context = { triggerKind = 1 } }))
  check(#items >= 1, 'textDocument/completion gave no item')
  local item = items[1]
  local new_text = (item.textEdit and item.textEdit.newText) or item.insertText or item.label
  result.completion = new_text
  local first = vim.split(inline.text, '\n')[1]
  check(new_text:sub(1, #first) == first or first:sub(1, #vim.split(new_text, '\n')[1]) == vim.split(new_text, '\n')[1],
    string.format('completion %q is not the inline suggestion %q', new_text, inline.text))
  result.steps.completion = elapsed()
  log(string.format('completion item: %q', new_text))

  -- 4. as a user: accept the suggestion with the keys the config set up
  if vim.lsp.inline_completion then
    -- 0.12+: ghost text, accepted with <Tab>
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('A', true, false, true), 'n', false)
    sleep(200)
    vim.lsp.inline_completion.get() -- no suggestion shown yet: asks for one (Invoked)
    local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
    wait_for(function()
      return ns and #vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, {}) > 0
    end, 20000, 'ghost text')
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<Tab><Esc>', true, false, true), 'm', false)
  else
    check(vim.bo[bufnr].omnifunc == 'v:lua.vim.lsp.omnifunc', "the config did not set 'omnifunc'")
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('A<C-x><C-o>', true, false, true), 'n', false)
    wait_for(function()
      return vim.fn.pumvisible() == 1 or vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] ~= '    '
    end, 20000, 'the completion menu')
    -- one match is inserted at once, without a menu; a menu is accepted with <C-y>
    local keys = vim.fn.pumvisible() == 1 and '<C-y><Esc>' or '<Esc>'
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), 'n', false)
  end
  local line = wait_for(function()
    local l = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
    return vim.fn.mode() == 'n' and l ~= '    ' and l
  end, 10000, 'the accepted suggestion in the buffer')
  result.accepted_line = line
  check(line:find(vim.trim(first), 1, true), string.format('line %q does not hold the suggestion %q', line, first))
  result.steps.accepted = elapsed()
  log(string.format('accepted: %q', line))

  -- 5. Neovim < 0.12: the module's own ghost text while typing, accepted a word, a line, then whole
  if not vim.lsp.inline_completion then
    ghost_text(bufnr, filetype)
  end
end

vim.defer_fn(function()
  finish(false, string.format('no result within %d s', timeout_s + 60))
end, (timeout_s + 60) * 1000)

h.run(test)
