-- Minimal init for the headless Neovim test, and the configuration shown in editors/README.md:
-- loads editors/nvim/xtc.lua as a user's init.lua would. XTC_LSP (server executable) and
-- XTC_MODEL (model SRC) come from the environment here; a user writes them in.
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
local repo = vim.fn.fnamemodify(here, ':h:h')

vim.opt.swapfile = false
vim.opt.shadafile = 'NONE'

local xtc = dofile(repo .. '/editors/nvim/xtc.lua')
xtc.setup({
  cmd = os.getenv('XTC_LSP') and { os.getenv('XTC_LSP') } or nil,
  settings = { model = os.getenv('XTC_MODEL') or '', maxNewTokens = 16 },
})
