-- What the headless Neovim tests share: the test runs as a coroutine (`sleep` yields to Neovim's
-- main loop), and `finish` writes the result table to $XTC_NVIM_RESULT, stops the xtc clients and
-- quits, exit status 0 on success, 1 on failure.
--   local h = dofile(root .. '/tests/e2e/nvim_harness.lua')(result, xtc, on_finish)
local uv = vim.uv or vim.loop

return function(result, xtc, on_finish)
  local h, finished = {}, false

  function h.finish(ok, err)
    if finished then
      return
    end
    finished = true
    result.ok, result.error = ok, err
    if on_finish then
      on_finish(ok, err)
    end
    local path = os.getenv('XTC_NVIM_RESULT')
    if path then
      local f = assert(io.open(path, 'w'))
      f:write(vim.fn.json_encode(result))
      f:close()
    end
    for _, client in ipairs(xtc.clients()) do
      if vim.fn.has('nvim-0.11') == 1 then
        client:stop()
      else
        client.stop()
      end
    end
    vim.wait(3000, function()
      return #xtc.clients() == 0
    end, 50)
    vim.cmd(ok and 'qall!' or 'cquit! 1')
  end

  function h.sleep(ms)
    local co = coroutine.running()
    vim.defer_fn(function()
      local ok, err = coroutine.resume(co)
      if not ok then
        h.finish(false, err)
      end
    end, ms)
    coroutine.yield()
  end

  function h.wait_for(cond, ms, what, poll_ms)
    local deadline = uv.now() + ms
    while uv.now() < deadline do
      local value = cond()
      if value then
        return value
      end
      h.sleep(poll_ms or 20)
      uv.update_time()
    end
    error('timed out waiting for ' .. what, 0)
  end

  -- Typed as a user would (mappings apply), then `ms` for Neovim to act on them.
  function h.keys(k, mode, ms)
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(k, true, false, true), mode or 'mt', false)
    if ms and ms > 0 then
      h.sleep(ms)
    end
  end

  function h.eq(want, got, what)
    if result.checks then
      result.checks = result.checks + 1
    end
    if not vim.deep_equal(want, got) then
      error(string.format('%s: want %s, got %s', what, vim.inspect(want), vim.inspect(got)), 0)
    end
  end

  function h.run(test)
    local co = coroutine.create(function()
      local ok, err = pcall(test)
      h.finish(ok, not ok and tostring(err) or nil)
    end)
    local ok, err = coroutine.resume(co)
    if not ok then
      h.finish(false, err)
    end
  end

  return h
end
