-- bizhawk_shim.lua: runs the unmodified clients/lua/nitrogen_bizhawk.lua inside mGBA 0.10 (loaded by
-- mgba_headless after a config script that sets the globals below). BizHawk scripts are a blocking
-- loop around emu.frameadvance(); mGBA scripts are callbacks, and mGBA refuses its API calls (require
-- included) from inside a coroutine. So the script runs in a coroutine resumed by mGBA's "frame"
-- callback, and every mGBA call it needs is handed out to the callback and run there.
--   SHIM_SCRIPT         the BizHawk script to run
--   SHIM_STOP_AT_FRAME  optional: press "Stop" at this frame (the coroutine is dropped, onexit runs)
--   NITROGEN_CONFIG     the script's own overrides
-- BizHawk's .NET TcpClient is tests/lua/dotnet_stub.lua over LuaSocket (as in the stub harness).
-- joypad.set lasts one frame, as in BizHawk; it becomes emu:setKeys() for the frame that follows.
-- client.pause() sets HOST_PAUSED: mgba_headless then runs no frames and fires "host_paused"
-- instead, which resumes a script waiting in emu.yield() (BizHawk resumes those on its UI loop).
local mgba, mgba_console, mgba_require = emu, console, require
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
package.path = here .. "../lua/?.lua;" .. package.path
require("dotnet_stub") -- the global luanet

local GBA = mgba:platform() == C.PLATFORM.GBA
local KEYS = GBA and C.GBA_KEY or C.GB_KEY
-- Gambatte's / mGBA core's pad names in BizHawk, and their mGBA key bits.
local NAMES = { "Up", "Down", "Left", "Right", "Start", "Select", "B", "A" }
if GBA then NAMES[#NAMES + 1] = "L"; NAMES[#NAMES + 1] = "R" end

-- Run an mGBA call on the callback's side (from the coroutine: hand it out and wait for the result).
local function on_main(fn, ...)
  if not coroutine.isyieldable() then return fn(...) end
  local r = table.pack(coroutine.yield("call", fn, ...))
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

local pending, handlers, status = {}, { exit = {}, console = {} }, nil
local function log(msg) on_main(function() mgba_console:log(msg) end) end

local env = setmetatable({
  require = function(name) return package.loaded[name] or on_main(mgba_require, name) end,
  console = { log = function(msg) log(tostring(msg)) end },
  emu = {
    getsystemid = function() return GBA and "GBA" or "GB" end,
    frameadvance = function() coroutine.yield("frame") end,
    yield = function() coroutine.yield("yield") end,
  },
  joypad = {
    get = function() local t = { Power = false } for _, n in ipairs(NAMES) do t[n] = false end return t end,
    set = function(t) for k, v in pairs(t) do pending[k] = v and true or false end end,
    setanalog = function() error("a Game Boy has no analog stick") end,
  },
  client = {
    screenshot = function(path) on_main(function() mgba:screenshot(path) end) end,
    pause = function() HOST_PAUSED = true end,
    unpause = function() HOST_PAUSED = false end,
    ispaused = function() return HOST_PAUSED == true end,
    getconfig = function() return { Screenshot_CaptureOSD = false } end,
    setscreenshotosd = function() error("the script must leave the OSD setting alone when it is off") end,
  },
  gui = { text = function(_, _, msg)
    if msg ~= status then status = msg; log("status: " .. msg) end
  end },
  event = {
    onexit = function(fn) table.insert(handlers.exit, fn) end,
    onconsoleclose = function(fn) table.insert(handlers.console, fn) end,
  },
}, { __index = _G })

local chunk = assert(loadfile(assert(SHIM_SCRIPT, "SHIM_SCRIPT is required"), "t", env))
local co, waiting, finished = coroutine.create(chunk), "frame", false

local function apply_pad() -- BizHawk: what joypad.set gave holds for the coming frame only
  local mask = 0
  for name, on in pairs(pending) do
    local key = KEYS[name:upper()]
    if not key then error("the script set a button this pad lacks: " .. name) end
    if on then mask = mask | (1 << key) end
  end
  pending = {}
  mgba:setKeys(mask)
end

local function finish(reason, err)
  finished = true
  HOST_PAUSED = false -- BizHawk keeps the pause; the host must run the frame that shows the release
  for _, fn in ipairs(handlers.exit) do
    local ok, e = pcall(fn)
    if not ok then mgba_console:error("onexit handler failed: " .. tostring(e)) end
  end
  apply_pad()
  mgba_console:log(("shim: script %s%s"):format(reason, err and (": " .. tostring(err)) or ""))
end

-- Resume the script until it waits for a frame or a UI tick; run the mGBA calls it hands out.
local function resume()
  local args = table.pack()
  while true do
    local r = table.pack(coroutine.resume(co, table.unpack(args, 1, args.n)))
    if not r[1] then return finish("error", debug.traceback(co, r[2])) end
    if coroutine.status(co) == "dead" then return finish("returned") end
    if r[2] ~= "call" then waiting = r[2]; return end
    args = table.pack(pcall(r[3], table.unpack(r, 4, r.n)))
  end
end

-- mGBA drops errors raised in callbacks without a word: report them and stop the host.
local function guarded(fn)
  return function()
    local ok, err = pcall(fn)
    if not ok then mgba_console:error("shim: " .. tostring(err)); HOST_EXIT = true end
  end
end

local frame = 0
callbacks:add("frame", guarded(function()
  if finished then HOST_EXIT = true; return end
  frame = frame + 1
  if SHIM_STOP_AT_FRAME and frame >= SHIM_STOP_AT_FRAME then return finish("stopped") end
  if waiting ~= "frame" then -- cannot happen in BizHawk either: a yielding script sees no frames
    return finish("error", "a frame ran while the script waited in emu.yield()")
  end
  resume()
  if waiting == "frame" and not finished then apply_pad() end
end))
callbacks:add("host_paused", guarded(function()
  if not finished and waiting == "yield" then resume() end
  if waiting == "frame" and not finished then apply_pad() end
end))
