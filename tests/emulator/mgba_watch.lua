-- mgba_watch.lua: ends a headless run one frame after nitrogen_mgba.lua stopped (loaded before it).
callbacks:add("frame", function()
  if nitrogen and nitrogen.state.stopped then HOST_EXIT = true end
end)
