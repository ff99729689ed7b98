-- harness.lua: runs clients/lua/nitrogen_bizhawk.lua under plain lua5.4 with stand-ins for BizHawk's
-- client/joypad/emu/gui/console/event tables, and writes what the script did, one JSON object a line.
-- Settings come from environment variables (see tests/lua/conftest.py, which sets them):
--   NITROGEN_SCRIPT        the script to run
--   NITROGEN_TEST_LOG      where to write the JSON lines
--   NITROGEN_TEST_SYSTEM   what emu.getsystemid() answers (default NES)
--   NITROGEN_TEST_CONFIG   a Lua table constructor that becomes NITROGEN_CONFIG, e.g. {port=5556}
--   NITROGEN_TEST_FRAMES   optional folder of frame_0.png, frame_1.png, ... that screenshots copy in turn
--   NITROGEN_TEST_CORRUPT  optional comma list of screenshot numbers (0-based) written as broken PNGs
--   NITROGEN_TEST_MAX_FRAMES  stop the script (like the user pressing Stop) after this many frames
--   NITROGEN_TEST_FRAME_SLEEP seconds each emulated frame takes (default 0)
--   NITROGEN_TEST_DOTNET   1: provide `luanet` (dotnet_stub.lua) so the script picks its BizHawk transport
--   NITROGEN_TEST_MAX_YIELDS  stop the script (Stop pressed) at this emu.yield() call
--   NITROGEN_TEST_STOP_BY  "stop" (default: event.onexit handlers run) or "console" (the Lua console was
--                          closed: BizHawk runs only event.onconsoleclose handlers)
--   NITROGEN_TEST_OSD      1: the user's config has Screenshot_CaptureOSD on
local socket = require("socket")
package.path = (arg and arg[0] and arg[0]:match("^(.*)[/\\]") or ".") .. "/?.lua;" .. package.path
local jsonl = require("jsonl")
if os.getenv("NITROGEN_TEST_DOTNET") == "1" then require("dotnet_stub") end -- defines the global luanet

local env = os.getenv
local LOG_PATH = assert(env("NITROGEN_TEST_LOG"), "NITROGEN_TEST_LOG is required")
local SCRIPT = assert(env("NITROGEN_SCRIPT"), "NITROGEN_SCRIPT is required")
local SYSTEM = env("NITROGEN_TEST_SYSTEM") or "NES"
local FRAMES_DIR = env("NITROGEN_TEST_FRAMES")
local MAX_FRAMES = tonumber(env("NITROGEN_TEST_MAX_FRAMES") or "100000")
local FRAME_SLEEP = tonumber(env("NITROGEN_TEST_FRAME_SLEEP") or "0")
local MAX_YIELDS = tonumber(env("NITROGEN_TEST_MAX_YIELDS") or "1e9")
local STOP_BY = env("NITROGEN_TEST_STOP_BY") or "stop"
local CORRUPT = {}
for n in (env("NITROGEN_TEST_CORRUPT") or ""):gmatch("%d+") do CORRUPT[tonumber(n)] = true end

-- The controller definitions of the default core of each system, as BizHawk names them.
local function prefixed(p, names) local t = {} for i, n in ipairs(names) do t[i] = p .. n end return t end
local CORES = {
  NES = prefixed("P1 ", { "Up", "Down", "Left", "Right", "Start", "Select", "B", "A" }),
  SNES = prefixed("P1 ", { "Up", "Down", "Left", "Right", "Select", "Start", "Y", "B", "X", "A", "L", "R" }),
  GB = { "Up", "Down", "Left", "Right", "Start", "Select", "B", "A", "Power" },
  GBA = { "Up", "Down", "Left", "Right", "Start", "Select", "B", "A", "L", "R", "Power" },
  GEN = prefixed("P1 ", { "Up", "Down", "Left", "Right", "A", "B", "C", "Start", "X", "Y", "Z", "Mode" }),
  N64 = prefixed("P1 ", { "A Up", "A Down", "A Left", "A Right", "DPad U", "DPad D", "DPad L", "DPad R",
    "Start", "Z", "B", "A", "C Up", "C Down", "C Right", "C Left", "L", "R" }),
}
CORES.GBC, CORES.SGB = CORES.GB, CORES.GB -- BizHawk runs SGB on Gambatte with a Game Boy pad
-- Game Boy Link (GambatteLink): two Game Boy pads, "P1 Up" .. "P2 A"; the script plays player 1.
CORES.GBL = prefixed("P1 ", { "Up", "Down", "Left", "Right", "Start", "Select", "B", "A", "Power" })
for _, n in ipairs(prefixed("P2 ", { "Up", "Down", "Left", "Right", "Start", "Select", "B", "A" })) do
  table.insert(CORES.GBL, n)
end
table.insert(CORES.NES, "Power"); table.insert(CORES.NES, "Reset")
local AXES = { N64 = { "P1 X Axis", "P1 Y Axis" } }
local BUTTONS, AXIS_SET = {}, {}
for _, n in ipairs(CORES[SYSTEM] or {}) do BUTTONS[n] = true end
for _, n in ipairs(AXES[SYSTEM] or {}) do AXIS_SET[n] = true end

---------------------------------------------------------------------------------------- JSON lines
local log_file = assert(io.open(LOG_PATH, "w"))
local function emit(record) log_file:write(jsonl.encode(record), "\n"); log_file:flush() end

---------------------------------------------------------------------------------------- PNG writer
-- A real PNG: IHDR + one IDAT holding a zlib stream of stored (uncompressed) deflate blocks + IEND.
local CRC_TABLE = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do c = (c & 1 == 1) and (0xEDB88320 ~ (c >> 1)) or (c >> 1) end
  CRC_TABLE[i] = c
end
local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = CRC_TABLE[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
  return c ~ 0xFFFFFFFF
end
local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s do a = (a + s:byte(i)) % 65521; b = (b + a) % 65521 end
  return (b << 16) | a
end
local function chunk(kind, data)
  return (">I4"):pack(#data) .. kind .. data .. (">I4"):pack(crc32(kind .. data))
end
local function png(width, height, pixel)
  local rows = {}
  for y = 0, height - 1 do
    local row = { "\0" } -- filter type 0
    for x = 0, width - 1 do row[#row + 1] = string.char(pixel(x, y)) end
    rows[#rows + 1] = table.concat(row)
  end
  local raw = table.concat(rows)
  local blocks, pos = { "\x78\x01" }, 1
  repeat
    local piece = raw:sub(pos, pos + 65534)
    pos = pos + #piece
    blocks[#blocks + 1] = ("<BI2I2"):pack(pos > #raw and 1 or 0, #piece, (~#piece) & 0xFFFF) .. piece
  until pos > #raw
  blocks[#blocks + 1] = (">I4"):pack(adler32(raw))
  return "\x89PNG\r\n\26\n" .. chunk("IHDR", (">I4I4BBBBB"):pack(width, height, 8, 2, 0, 0, 0))
    .. chunk("IDAT", table.concat(blocks)) .. chunk("IEND", "")
end

---------------------------------------------------------------------------------------- BizHawk stubs
local frame, shots, status_text = 0, 0, nil
local overrides, holds, unknown, non_integer, set_calls = {}, {}, {}, {}, 0
local handlers, stopping = { exit = {}, console = {} }, false
local paused, yields, frame_yields, unpaused_yields = false, 0, 0, 0
local config = { Screenshot_CaptureOSD = env("NITROGEN_TEST_OSD") == "1" }
local osd_calls = {}
local STOP = setmetatable({}, { __tostring = function() return "harness: stop requested" end })

local function write_file(path, data) local f = assert(io.open(path, "wb")); f:write(data); f:close() end

client = {
  screenshot = function(path)
    local n = shots
    shots = shots + 1
    if CORRUPT[n] then write_file(path, "\x89PNG\r\n\26\nthis is not a real image"); return end
    if FRAMES_DIR then
      local f = io.open(FRAMES_DIR .. "/frame_" .. n .. ".png", "rb") or
        assert(io.open(FRAMES_DIR .. "/frame_0.png", "rb"), "no frames in " .. FRAMES_DIR)
      local data = f:read("a"); f:close()
      write_file(path, data)
    else
      local function pixel(x, y) return (x * 4 + n) % 256, (y * 5) % 256, (n * 37) % 256 end
      write_file(path, png(160, 144, pixel))
    end
  end,
  -- BizHawk saves this into the user's config (Config.Screenshot_CaptureOSD).
  setscreenshotosd = function(v) osd_calls[#osd_calls + 1] = v; config.Screenshot_CaptureOSD = v end,
  getconfig = function() return config end,
  pause = function() paused = true end,
  unpause = function() paused = false end,
  ispaused = function() return paused end,
}

local function qualify(name, controller) return controller and ("P" .. controller .. " " .. name) or name end
joypad = {
  get = function()
    local t = {}
    for n in pairs(BUTTONS) do t[n] = false end
    for n in pairs(AXIS_SET) do t[n] = 0 end
    return t
  end,
  set = function(tbl, controller)
    set_calls = set_calls + 1
    for k, v in pairs(tbl) do
      local name = qualify(k, controller)
      if BUTTONS[name] then overrides[name] = v and true or false else unknown[name] = true end
    end
  end,
  setanalog = function(tbl, controller)
    for k, v in pairs(tbl) do
      local name = qualify(k, controller)
      if not AXIS_SET[name] then unknown[name] = true
      elseif math.type(v) == "integer" then holds[name] = v
      elseif type(v) == "number" then non_integer[name] = v; holds[name] = nil -- BizHawk: long.TryParse fails
      else holds[name] = nil end -- a non-number releases the hold
    end
  end,
}

emu = {
  getsystemid = function() return SYSTEM end,
  frameadvance = function()
    if stopping then error("frameadvance called after the script was stopped") end
    -- BizHawk: frameadvance blocks while the emulator is paused; a script that pauses and then
    -- advances hangs for good.
    if paused then error("frameadvance called while the emulator is paused: BizHawk would hang") end
    emit({ frame = frame, shots = shots, set = overrides, analog = holds, status = status_text,
      yields = frame_yields })
    overrides, status_text, frame_yields = {}, nil, 0
    frame = frame + 1
    if FRAME_SLEEP > 0 then socket.sleep(FRAME_SLEEP) end
    if frame >= MAX_FRAMES then error(STOP, 0) end
  end,
  framecount = function() return frame end,
  -- BizHawk resumes a yielded script on its next UI loop (no frame runs while paused).
  yield = function()
    if stopping then error("yield called after the script was stopped") end
    yields, frame_yields = yields + 1, frame_yields + 1
    if not paused then unpaused_yields = unpaused_yields + 1 end
    socket.sleep(0.001)
    if yields >= MAX_YIELDS then error(STOP, 0) end
  end,
}
gui = { text = function(_, _, msg) status_text = msg end }
console = { log = function(msg) emit({ console = tostring(msg), frame = frame }) end }
event = {
  onexit = function(fn, name) table.insert(handlers.exit, fn); return name or "h" end,
  onconsoleclose = function(fn, name) table.insert(handlers.console, fn); return name or "h" end,
}

---------------------------------------------------------------------------------------- run it
local config_src = env("NITROGEN_TEST_CONFIG")
if config_src then
  NITROGEN_CONFIG = assert(load("return " .. config_src, "NITROGEN_TEST_CONFIG", "t", {}))()
end

local chunk_fn = assert(loadfile(SCRIPT))
local ok, err = pcall(chunk_fn)
local reason = ok and "returned" or (err == STOP and "stopped" or "error")
-- BizHawk runs event.onexit handlers once the script has stopped, except when the Lua console is
-- closed: then only event.onconsoleclose handlers run.
stopping = true
overrides = {}
for _, fn in ipairs(STOP_BY == "console" and handlers.console or handlers.exit) do fn() end
local unknown_list = {}
for n in pairs(unknown) do unknown_list[#unknown_list + 1] = n end
emit({ ["end"] = reason, error = (reason == "error") and tostring(err) or nil, frames = frame, shots = shots,
  exit_set = overrides, final_analog = holds, unknown = unknown_list, non_integer = non_integer,
  set_calls = set_calls, paused = paused, yields = yields, unpaused_yields = unpaused_yields,
  osd = config.Screenshot_CaptureOSD, osd_calls = osd_calls,
  open_sockets = rawget(_G, "luanet") and luanet.open_clients() or nil })
log_file:close()
os.exit(reason == "error" and 1 or 0)
