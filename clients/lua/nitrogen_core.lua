-- nitrogen_core.lua: what the BizHawk and mGBA clients share (Lua 5.4, no emulator API used here):
-- the configuration keys, the JSON decoder, the console button maps and their rules, the predict
-- request and the checks on its reply. Keep this file next to nitrogen_bizhawk.lua / nitrogen_mgba.lua:
-- each script loads it from its own folder (require "nitrogen_core").
local core = {}

----------------------------------------------------------------------------------------------------
-- Configuration. Each script has a CONFIG block for overrides; a global NITROGEN_CONFIG table wins.
----------------------------------------------------------------------------------------------------
core.DEFAULTS = {
  host = "127.0.0.1",
  port = 5556,
  console = false,          -- false: ask the emulator; or "NES", "SNES", "GB", "GBC", "GBA", "GEN", "N64"
  frames_per_action = false, -- false: the server's "repeat" (the model's action_downsample_ratio)
  actions_per_step = false, -- false: play every action of the predicted chunk before the next screenshot
  allow_menu = false,       -- let the model press START / SELECT (BACK) / Mode
  stick_deadzone = 0.5,     -- |stick| above this presses the d-pad (consoles without an analog stick)
  analog_deadzone = 0.15,   -- N64: stick radius below this is centred
  resize_mode = "stretch",  -- how the server squares the frame: "stretch" (as the model was trained), "pad", "crop"
  connect_timeout = 0.5,    -- seconds (BizHawk; mGBA 0.10's connect has no timeout)
  reply_timeout = 10,       -- seconds to wait for one prediction (and for a send to go through)
  retry_min_frames = 30,    -- reconnect back-off while the server is down (frames; 60 frames ~ 1 s)
  retry_max_frames = 600,
  transport = "auto",       -- BizHawk: "auto", "dotnet" (its .NET TcpClient) or "luasocket"
  read_chunk = 4096,        -- bytes per socket read
  frame_path = false,       -- false: nitrogen_frame.png in the script's folder
  seed_base = false,        -- integer: send seed = seed_base + i with the i-th predict of a session
  max_steps = false,        -- stop after this many answered requests (false: run until stopped)
  show_status = true,       -- show the status line (BizHawk: on the game screen; mGBA: a console buffer)
}

-- DEFAULTS, then `overrides` (the script's CONFIG block), then the global NITROGEN_CONFIG; false = unset.
function core.configure(overrides)
  local cfg = {}
  for k, v in pairs(core.DEFAULTS) do cfg[k] = v end
  for _, layer in ipairs({ overrides or {}, rawget(_G, "NITROGEN_CONFIG") or {} }) do
    for k, v in pairs(layer) do
      if core.DEFAULTS[k] == nil then
        local known = {}
        for name in pairs(core.DEFAULTS) do known[#known + 1] = name end
        table.sort(known)
        error(("unknown config key %q; known keys: %s"):format(tostring(k), table.concat(known, ", ")), 0)
      end
      cfg[k] = v
    end
  end
  for k, v in pairs(cfg) do if v == false and k ~= "allow_menu" and k ~= "show_status" then cfg[k] = nil end end
  return cfg
end

-- The folder of the calling script ("" when unknown), from the chunk name Lua gives a loaded file.
function core.script_folder(level)
  local source = debug.getinfo((level or 1) + 1, "S").source
  return source:match("^@(.*[/\\])") or ""
end

----------------------------------------------------------------------------------------------------
-- JSON decoder (RFC 8259): objects, arrays, strings with every escape incl. \uXXXX and surrogate
-- pairs, numbers with sign, fraction and exponent, true/false/null (null decodes to json.null).
----------------------------------------------------------------------------------------------------
local json = { null = setmetatable({}, { __tostring = function() return "null" end }) }
core.json = json
local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

function json.decode(s)
  local pos, depth = 1, 0
  local function fail(what) error(("invalid JSON at byte %d: %s"):format(pos, what), 0) end
  local function skip() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function hex4(at)
    local h = s:match("^%x%x%x%x", at)
    if not h then pos = at; fail("expected 4 hex digits after \\u") end
    return tonumber(h, 16)
  end
  local function str()
    local parts, i = {}, pos + 1
    while true do
      local a = s:find('["\\%z\1-\31]', i)
      if not a then pos = #s + 1; fail("unterminated string") end
      parts[#parts + 1] = s:sub(i, a - 1)
      local c = s:sub(a, a)
      if c == '"' then pos = a + 1; return table.concat(parts) end
      if c ~= "\\" then pos = a; fail("control character in string") end
      local e = s:sub(a + 1, a + 1)
      if e == "u" then
        local cp = hex4(a + 2); i = a + 6
        if cp >= 0xD800 and cp <= 0xDBFF and s:sub(i, i + 1) == "\\u" then
          local lo = hex4(i + 2)
          if lo >= 0xDC00 and lo <= 0xDFFF then
            cp, i = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00), i + 6
          end
        end
        if cp >= 0xD800 and cp <= 0xDFFF then cp = 0xFFFD end -- a lone surrogate has no UTF-8 form
        parts[#parts + 1] = utf8.char(cp)
      elseif ESCAPES[e] then
        parts[#parts + 1] = ESCAPES[e]; i = a + 2
      else
        pos = a; fail("invalid escape \\" .. e)
      end
    end
  end
  local function num()
    local start = pos
    local int = s:match("^-?%d+", pos)
    if not int then fail("unexpected character '" .. s:sub(pos, pos) .. "'") end
    if int:match("^-?0%d") then fail("leading zero in number") end
    pos = pos + #int
    if s:sub(pos, pos) == "." then
      local frac = s:match("^%.%d+", pos) or fail("digits expected after '.'")
      pos = pos + #frac
    end
    if s:match("^[eE]", pos) then
      local exp = s:match("^[eE][-+]?%d+", pos) or fail("digits expected in exponent")
      pos = pos + #exp
    end
    return tonumber(s:sub(start, pos - 1))
  end
  local function container(close, item)
    depth = depth + 1
    if depth > 256 then fail("nesting deeper than 256") end
    local t = {}
    pos = pos + 1; skip()
    if s:sub(pos, pos) == close then pos = pos + 1; depth = depth - 1; return t end
    while true do
      item(t); skip()
      local c = s:sub(pos, pos); pos = pos + 1
      if c == close then depth = depth - 1; return t end
      if c ~= "," then pos = pos - 1; fail("expected ',' or '" .. close .. "'") end
      skip()
    end
  end
  local function array_item(t) t[#t + 1] = value() end
  local function object_item(t)
    if s:sub(pos, pos) ~= '"' then fail("expected a string key") end
    local k = str(); skip()
    if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
    pos = pos + 1; skip()
    t[k] = value()
  end
  local LITERALS = { t = { "true", true }, f = { "false", false }, n = { "null", json.null } }
  function value()
    skip()
    local c = s:sub(pos, pos)
    if c == "{" then return container("}", object_item) end
    if c == "[" then return container("]", array_item) end
    if c == '"' then return str() end
    local lit = LITERALS[c]
    if lit then
      if s:sub(pos, pos + #lit[1] - 1) ~= lit[1] then fail("invalid literal") end
      pos = pos + #lit[1]; return lit[2]
    end
    if c == "" then fail("unexpected end of input") end
    return num()
  end
  local result = value(); skip()
  if pos <= #s then fail("trailing characters") end
  return result
end

function core.json_string(v)
  return '"' .. tostring(v):gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
end

----------------------------------------------------------------------------------------------------
-- Button maps. The model emits 21 Xbox-style buttons (index: name below) and two sticks in [-1, 1],
-- y positive = screen down. Each console map sends a console button when ANY listed model input is
-- on. LS_*/RS_* are the left/right stick past stick_deadzone. START and BACK count only with
-- allow_menu; GUIDE is never used. Names are BizHawk's ControllerDefinition names (mGBA uses the
-- same short names, upper-cased, as C.GB_KEY / C.GBA_KEY); `prefix` is what the usual BizHawk core
-- puts in front, and the actual names are checked against the core's pad at start-up.
-- Opposite directions: the model often presses Up+Down or Left+Right at once, and emulators differ
-- (mGBA drops both, BizHawk has a setting). One rule everywhere: a pair that is pressed together
-- cancels out, neither is pressed (`opposites`). The N64 analog stick and C buttons are not d-pads.
----------------------------------------------------------------------------------------------------
core.MODEL_BUTTONS = { "BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "EAST", "GUIDE",
  "LEFT_SHOULDER", "LEFT_THUMB", "LEFT_TRIGGER", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT",
  "RIGHT_SHOULDER", "RIGHT_THUMB", "RIGHT_TRIGGER", "RIGHT_UP", "SOUTH", "START", "WEST" }
local DPAD = { Up = { "DPAD_UP", "LS_UP" }, Down = { "DPAD_DOWN", "LS_DOWN" },
  Left = { "DPAD_LEFT", "LS_LEFT" }, Right = { "DPAD_RIGHT", "LS_RIGHT" } }
local DPAD_OPPOSITES = { { "Up", "Down" }, { "Left", "Right" } }
local function with_dpad(t) for k, v in pairs(DPAD) do t[k] = v end return t end

core.MAPS = {
  -- NesHawk/QuickNES: NESControllers.cs ControllerNES "0A".."0Right", merged as "P1 A" .. "P1 Right".
  NES = { prefix = "P1 ", opposites = DPAD_OPPOSITES, buttons = with_dpad { A = { "SOUTH" },
    B = { "EAST", "WEST" }, Start = { "START" }, Select = { "BACK" } } },
  -- BSNES/Snes9x: BsnesControllers.cs "0Up".."0Start" -> "P1 B", "P1 Y", ... Positional SNES layout.
  SNES = { prefix = "P1 ", opposites = DPAD_OPPOSITES, buttons = with_dpad { B = { "SOUTH" },
    A = { "EAST" }, Y = { "WEST" }, X = { "NORTH" }, L = { "LEFT_SHOULDER", "LEFT_TRIGGER" },
    R = { "RIGHT_SHOULDER", "RIGHT_TRIGGER" }, Start = { "START" }, Select = { "BACK" } } },
  -- Gambatte: Gambatte.cs GbController "Up","Down","Left","Right","Start","Select","B","A" (no
  -- prefix); GBHawk and the linked cores name them "P1 Up" ...: the start-up check picks what exists.
  GB = { prefix = "", opposites = DPAD_OPPOSITES, buttons = with_dpad { A = { "SOUTH" },
    B = { "EAST", "WEST" }, Start = { "START" }, Select = { "BACK" } } },
  -- mGBA: GBA.cs GBAController "Up".."R" (no prefix).
  GBA = { prefix = "", opposites = DPAD_OPPOSITES, buttons = with_dpad { A = { "SOUTH" },
    B = { "EAST", "WEST" }, L = { "LEFT_SHOULDER", "LEFT_TRIGGER" },
    R = { "RIGHT_SHOULDER", "RIGHT_TRIGGER" }, Start = { "START" }, Select = { "BACK" } } },
  -- Genesis Plus GX: GPGXControlConverter.cs "P{n} {Name}", 3/6-button pads. Sega's own Xbox layout:
  -- A=X, B=A, C=B, X=LB, Y=Y, Z=RB.
  GEN = { prefix = "P1 ", opposites = DPAD_OPPOSITES, buttons = with_dpad { A = { "WEST" },
    B = { "SOUTH" }, C = { "EAST" }, X = { "LEFT_SHOULDER" }, Y = { "NORTH" },
    Z = { "RIGHT_SHOULDER" }, Start = { "START" }, Mode = { "BACK" } } },
  -- Mupen64Plus: N64Input.cs "P1 DPad U".."P1 C Left", axes "P1 X Axis"/"P1 Y Axis" in -128..127,
  -- stick right = +X, stick up = +Y. Left stick -> analog stick, right stick -> C buttons.
  N64 = { prefix = "P1 ", opposites = { { "DPad U", "DPad D" }, { "DPad L", "DPad R" } },
    buttons = { A = { "SOUTH" }, B = { "WEST", "EAST" }, Z = { "LEFT_TRIGGER" },
    L = { "LEFT_SHOULDER" }, R = { "RIGHT_SHOULDER", "RIGHT_TRIGGER" }, Start = { "START" },
    ["DPad U"] = { "DPAD_UP" }, ["DPad D"] = { "DPAD_DOWN" }, ["DPad L"] = { "DPAD_LEFT" },
    ["DPad R"] = { "DPAD_RIGHT" }, ["C Up"] = { "RS_UP" }, ["C Down"] = { "RS_DOWN" },
    ["C Left"] = { "RS_LEFT" }, ["C Right"] = { "RS_RIGHT" } },
    analog = { x = "X Axis", y = "Y Axis", scale = 127 } },
}
-- Emulator system ids (BizHawk's emu.getsystemid()) that share a pad with one of the maps above:
-- Super Game Boy and Game Boy Link run Gambatte with Game Boy pads (Link: player 1's).
core.SYSTEM_ALIASES = { GBC = "GB", SGB = "GB", GBL = "GB", ["32X"] = "GEN" }

-- The map for a system id, or nil and an error naming the supported ones.
function core.map_for(system)
  local map = core.MAPS[system] or core.MAPS[core.SYSTEM_ALIASES[system] or ""]
  if map then return map end
  local names = {}
  for name in pairs(core.MAPS) do names[#names + 1] = name end
  for name in pairs(core.SYSTEM_ALIASES) do names[#names + 1] = name end
  table.sort(names)
  return nil, ("console %q has no button map; supported: %s"):format(tostring(system), table.concat(names, " "))
end

-- Resolve a map's short names to the running core's names (`available`: set of the pad's names).
function core.resolve_map(map, available)
  local function name_of(short)
    if not available or next(available) == nil then return map.prefix .. short end
    for _, cand in ipairs({ map.prefix .. short, short, "P1 " .. short }) do
      if available[cand] ~= nil then return cand end
    end
  end
  local r = { buttons = {}, missing = {}, opposites = {} }
  for short, inputs in pairs(map.buttons) do
    local full = name_of(short)
    if full then r.buttons[full] = inputs else r.missing[#r.missing + 1] = short end
  end
  for _, pair in ipairs(map.opposites or {}) do
    local a, b = name_of(pair[1]), name_of(pair[2])
    if a and b then r.opposites[#r.opposites + 1] = { a, b } end
  end
  if map.analog then -- joypad.get() lists axes too (ControllerExtensions.ToDictionary)
    local x, y = name_of(map.analog.x), name_of(map.analog.y)
    if x and y then r.analog = { x = x, y = y, scale = map.analog.scale }
    else r.missing[#r.missing + 1] = map.analog.x .. "/" .. map.analog.y end
  end
  table.sort(r.missing)
  return r
end

local function stick(v)
  if type(v) ~= "table" then return { 0, 0 } end
  return { tonumber(v[1]) or 0, tonumber(v[2]) or 0 }
end

-- One action (21 buttons, left stick, right stick) -> pad table (name -> bool) and, for a map with an
-- analog stick, the axis table (name -> integer).
function core.action_to_pad(rmap, buttons, jl, jr, cfg)
  if type(buttons) ~= "table" then buttons = {} end
  jl, jr = stick(jl), stick(jr)
  local on = {}
  for i, name in ipairs(core.MODEL_BUTTONS) do on[name] = (tonumber(buttons[i]) or 0) > 0.5 end
  if not cfg.allow_menu then on.START, on.BACK = false, false end
  on.GUIDE = false
  local dz = cfg.stick_deadzone
  on.LS_LEFT, on.LS_RIGHT, on.LS_UP, on.LS_DOWN = jl[1] < -dz, jl[1] > dz, jl[2] < -dz, jl[2] > dz
  on.RS_LEFT, on.RS_RIGHT, on.RS_UP, on.RS_DOWN = jr[1] < -dz, jr[1] > dz, jr[2] < -dz, jr[2] > dz
  local pad = {}
  for full, inputs in pairs(rmap.buttons) do
    local pressed = false
    for _, input in ipairs(inputs) do pressed = pressed or on[input] end
    pad[full] = pressed
  end
  for _, pair in ipairs(rmap.opposites or {}) do
    if pad[pair[1]] and pad[pair[2]] then pad[pair[1]], pad[pair[2]] = false, false end
  end
  local analog
  if rmap.analog then
    local x, y, s = jl[1], -jl[2], rmap.analog.scale -- the model's y points down, the pad's up
    local r = math.sqrt(x * x + y * y)
    if r < cfg.analog_deadzone then x, y = 0, 0
    elseif r > 1 then x, y = x / r, y / r end -- diagonals stay on the stick's circle (radius `scale`)
    local xi, yi = math.floor(x * s + 0.5), math.floor(y * s + 0.5)
    if xi * xi + yi * yi > s * s then -- rounding pushed a diagonal past the circle: round toward 0
      local function trunc(v) return v >= 0 and math.floor(v) or math.ceil(v) end
      xi, yi = trunc(x * s), trunc(y * s)
    end
    analog = { [rmap.analog.x] = xi, [rmap.analog.y] = yi }
  end
  return pad, analog
end

----------------------------------------------------------------------------------------------------
-- The predict request and its reply (docs/protocol.md). Unknown reply keys are ignored.
----------------------------------------------------------------------------------------------------
function core.predict_header(len, cfg, call)
  local header = ('{"type":"predict","len":%d,"resize_mode":%s'):format(len, core.json_string(cfg.resize_mode))
  if cfg.seed_base then header = header .. (',"seed":%d'):format(cfg.seed_base + call) end
  return header .. "}\n"
end

-- A reply line -> the reply table, or nil and what was wrong with it.
function core.parse_reply(line)
  local ok, reply = pcall(json.decode, line)
  if not ok then return nil, "bad reply: " .. reply end
  if type(reply) ~= "table" then return nil, "bad reply: not an object" end
  local p = reply.pred
  if reply.status == "ok" and not (type(p) == "table" and type(p.buttons) == "table"
      and type(p.j_left) == "table" and type(p.j_right) == "table"
      and #p.j_left >= #p.buttons and #p.j_right >= #p.buttons) then
    return nil, "bad reply: pred needs buttons, j_left and j_right of one length"
  end
  return reply
end

-- How many frames each action lasts and how many actions of the chunk to play.
function core.chunk_plan(reply, cfg)
  local frames = math.max(1, math.floor(cfg.frames_per_action or tonumber(reply["repeat"]) or 1))
  local n = #reply.pred.buttons
  if cfg.actions_per_step then n = math.min(n, cfg.actions_per_step) end
  return n, frames
end

-- "playing: step 12, 16 actions x 2 frames[, server 23 ms]" (server_timing.total_ms when the server sends it).
function core.playing_status(step, n, frames, reply)
  local s = ("playing: step %d, %d actions x %d frames"):format(step, n, frames)
  local timing = reply.server_timing
  local total = type(timing) == "table" and tonumber(timing.total_ms)
  if total then s = s .. (", server %d ms"):format(math.floor(total + 0.5)) end
  return s
end

function core.unreachable_status(cfg, err)
  return ("server %s:%d unreachable (%s), retrying"):format(cfg.host, cfg.port, tostring(err))
end

return core
