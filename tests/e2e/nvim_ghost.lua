-- Headless test of editors/nvim/xtc.lua's own ghost text, without a server:
--   XTC_NVIM_RESULT=out.json nvim --headless -u NONE -c 'luafile tests/e2e/nvim_ghost.lua'
-- M.next_word / M.next_line on fixed texts; then, in a buffer, suggestions shown with
-- M.show_ghost and accepted, dismissed or cleared with the insert-mode keys a user types.
-- Writes {ok, error, checks} to XTC_NVIM_RESULT; exits 0 on success, 1 on failure.

local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h:h')
local xtc = dofile(root .. '/editors/nvim/xtc.lua')
xtc.setup({ filetypes = {} })
local result = { nvim = tostring(vim.version().major .. '.' .. vim.version().minor), checks = 0 }

local h = dofile(root .. '/tests/e2e/nvim_harness.lua')(result, xtc)
local eq = h.eq

local function keys(k, mode) -- typed as a user would: mappings apply
  h.keys(k, mode, 50)
end

local function lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end

local function marks()
  local ns = vim.api.nvim_get_namespaces()['xtc_ghost']
  return vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
end

local function test()
  -- the pure helpers
  for _, case in ipairs({
    { 'return a + b', 'return', 'return a + b' },
    { ' a + b', ' a', ' a + b' },
    { ' + b', ' +', ' + b' },
    { '(x, y)\n    pass', '(', '(x, y)' },
    { '  self.items = []', '  self', '  self.items = []' },
    { '.items', '.', '.items' },
    { 'größe = 1', 'größe', 'größe = 1' },
    { '\n    return x\n', '\n    ', '\n    return x' },
    { '\nreturn', '\n', '\nreturn' },
    { '  ', '  ', '  ' },
    { 'x', 'x', 'x' },
  }) do
    eq(case[2], xtc.next_word(case[1]), 'next_word(' .. vim.inspect(case[1]) .. ')')
    eq(case[3], xtc.next_line(case[1]), 'next_line(' .. vim.inspect(case[1]) .. ')')
  end

  -- a buffer with our ghost text (no server: shown with M.show_ghost)
  vim.bo.expandtab = false
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { 'def f(a, b):', '    ' })
  -- mappings of the user's that the keys fall back to when no ghost text is shown
  vim.cmd('inoremap <expr> <C-]> toupper("x")')
  vim.g.previous_calls = 0
  vim.keymap.set('i', '<M-Right>', function() vim.g.previous_calls = vim.g.previous_calls + 1 end)
  xtc.enable_ghost(0, nil)
  eq('', vim.b.xtc_ghost, 'b:xtc_ghost before')
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A', 'n')
  eq('i', vim.fn.mode(), 'mode')
  xtc.show_ghost('return a + b\n    # done\n')
  eq('return a + b\n    # done\n', vim.b.xtc_ghost, 'b:xtc_ghost shown')
  local m = marks()
  eq(1, #m, 'one extmark')
  eq({ 1, 4 }, { m[1][2], m[1][3] }, 'extmark at the cursor')
  eq(vim.fn.has('nvim-0.10') == 1 and 'inline' or 'eol', m[1][4].virt_text_pos, 'first line position')
  eq('return a + b', m[1][4].virt_text[1][1], 'first line')
  eq({ { { '    # done', 'Comment' } }, { { '', 'Comment' } } }, m[1][4].virt_lines, 'the other lines')

  keys('<M-Right>')
  eq({ 'def f(a, b):', '    return' }, lines(), 'accept word')
  eq(' a + b\n    # done\n', vim.b.xtc_ghost, 'rest after a word')
  eq({ 2, 10 }, vim.api.nvim_win_get_cursor(0), 'cursor after a word')
  eq(1, #marks(), 'rest still shown')
  keys('<M-Right>')
  eq({ 'def f(a, b):', '    return a' }, lines(), 'accept a second word')
  keys('<M-C-Right>')
  eq({ 'def f(a, b):', '    return a + b' }, lines(), 'accept line')
  eq('\n    # done\n', vim.b.xtc_ghost, 'rest after a line')
  keys('<M-C-Right>')
  eq({ 'def f(a, b):', '    return a + b', '    # done' }, lines(), 'accept the next line')
  eq({ 3, 10 }, vim.api.nvim_win_get_cursor(0), 'cursor on the next line')
  eq('\n', vim.b.xtc_ghost, 'rest after the next line')
  keys('<Tab>')
  eq({ 'def f(a, b):', '    return a + b', '    # done', '' }, lines(), 'accept all')
  eq('', vim.b.xtc_ghost, 'nothing left')
  eq(0, #marks(), 'no extmark left')

  -- accept all in the middle of a line, rewriting the closing bracket the server said it rewrites
  keys('<Esc>', 'n')
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { '    print()' })
  vim.api.nvim_win_set_cursor(0, { 1, 9 })
  keys('a', 'n') -- after the '('
  eq({ 1, 10 }, vim.api.nvim_win_get_cursor(0), 'cursor inside the brackets')
  xtc.show_ghost('x, y)', 1)
  m = marks()
  eq(vim.fn.has('nvim-0.10') == 1 and 'inline' or 'overlay', m[1][4].virt_text_pos, 'mid-line position')
  if vim.fn.has('nvim-0.10') == 0 then -- drawn over the rest of the line, which follows it
    eq({ { 'x, y)', 'Comment' }, { ')', 'Normal' } }, m[1][4].virt_text, 'overlay chunks')
  end
  keys('<Tab>')
  eq({ '    print(x, y)' }, lines(), 'accept all, bracket rewritten')
  eq({ 1, 15 }, vim.api.nvim_win_get_cursor(0), 'cursor after the suggestion')

  -- dismissed, cleared by typing, by moving, by leaving insert mode; keys fall back when none shown
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { 'x = ' })
  vim.api.nvim_win_set_cursor(0, { 1, 4 })
  xtc.show_ghost('1')
  keys('<C-]>')
  eq('', vim.b.xtc_ghost, 'dismissed')
  eq(0, #marks(), 'dismissed: no extmark')
  eq({ 'x = ' }, lines(), 'dismiss leaves the text')
  keys('<Tab>')
  eq({ 'x = \t' }, lines(), 'Tab without ghost text inserts a tab')
  keys('<C-]>')
  eq({ 'x = \tX' }, lines(), "<C-]> without ghost text: the user's expr mapping")
  keys('<BS>')
  keys('<M-Right>')
  eq({ 'x = \t' }, lines(), '<M-Right> without ghost text changes nothing')
  if vim.fn.has('nvim-0.8') == 1 then -- 0.7 cannot call a Lua mapping it replaced
    eq(1, vim.g.previous_calls, "<M-Right> without ghost text: the user's Lua mapping")
  end
  xtc.show_ghost('1')
  keys('2')
  eq({ 'x = \t2' }, lines(), 'typed')
  eq('', vim.b.xtc_ghost, 'typing clears it')
  xtc.show_ghost('1')
  keys('<Left>')
  eq('', vim.b.xtc_ghost, 'moving clears it')
  eq(0, #marks(), 'moving: no extmark')
  xtc.show_ghost('1')
  keys('<Esc>', 'n')
  eq('n', vim.fn.mode(), 'left insert mode')
  eq('', vim.b.xtc_ghost, 'leaving insert mode clears it')
  eq(false, xtc.accept('all'), 'accept with nothing shown')
end

h.run(test)
