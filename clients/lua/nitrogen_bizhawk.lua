-- nitrogen_bizhawk.lua: let the NitroGen policy play a BizHawk game (BizHawk 2.9+, Lua 5.4).
-- Load it from Tools > Lua Console > Script > Open Script. A nitrogen-server must be reachable on its
-- newline-JSON TCP port (default 5556). Protocol: docs/protocol.md. Everything lives in this one file.

----------------------------------------------------------------------------------------------------
-- Configuration: edit these values (or set the global NITROGEN_CONFIG to a table of overrides).
----------------------------------------------------------------------------------------------------
local CONFIG = {
  host = "127.0.0.1",
  port = 5556,
  console = nil,            -- nil: emu.getsystemid(); or "NES", "SNES", "GB", "GBC", "GBA", "GEN", "N64"
  frames_per_action = nil,  -- nil: the server's "repeat" (the model's action_downsample_ratio)
  actions_per_step = nil,   -- nil: play every action of the predicted chunk before the next screenshot
  allow_menu = false,       -- let the model press START / SELECT (BACK) / Mode
  stick_deadzone = 0.5,     -- |stick| above this presses the d-pad (consoles without an analog stick)
  analog_deadzone = 0.15,   -- N64: stick radius below this is centred
  resize_mode = "pad",      -- how the server squares the frame: "pad", "crop" or "stretch"
  connect_timeout = 0.5,    -- seconds; the emulator is paused while connecting
  reply_timeout = 10,       -- seconds to wait for one prediction
  retry_min_frames = 30,    -- reconnect back-off while the server is down (frames; 60 frames ~ 1 s)
  retry_max_frames = 600,
  transport = "auto",       -- "auto", "dotnet" (BizHawk's .NET TcpClient) or "luasocket"
  read_chunk = 4096,        -- bytes per socket read
  frame_path = nil,         -- nil: nitrogen_frame.png in %TEMP% (or the working directory)
  seed_base = nil,          -- integer: send seed = seed_base + i with the i-th predict of a session
  max_steps = nil,          -- stop after this many answered requests (nil: run until stopped)
  show_status = true,       -- draw the status line on the game screen
}
for k, v in pairs(rawget(_G, "NITROGEN_CONFIG") or {}) do CONFIG[k] = v end

----------------------------------------------------------------------------------------------------
-- JSON decoder (RFC 8259): objects, arrays, strings with every escape incl. \uXXXX and surrogate
-- pairs, numbers with sign, fraction and exponent, true/false/null (null decodes to json.null).
----------------------------------------------------------------------------------------------------
local json = { null = setmetatable({}, { __tostring = function() return "null" end }) }
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

local function json_string(v)
  return '"' .. tostring(v):gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
end

----------------------------------------------------------------------------------------------------
-- Button maps. The model emits 21 Xbox-style buttons (index: name below) and two sticks in [-1, 1],
-- y positive = screen down. Each console map sends a console button when ANY listed model input is
-- on. LS_*/RS_* are the left/right stick past stick_deadzone. START and BACK count only with
-- allow_menu; GUIDE is never used. Names are BizHawk's ControllerDefinition names; `prefix` is what
-- the usual core puts in front, and the actual names are checked against joypad.get() at start-up.
----------------------------------------------------------------------------------------------------
local MODEL_BUTTONS = { "BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "EAST", "GUIDE",
  "LEFT_SHOULDER", "LEFT_THUMB", "LEFT_TRIGGER", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT",
  "RIGHT_SHOULDER", "RIGHT_THUMB", "RIGHT_TRIGGER", "RIGHT_UP", "SOUTH", "START", "WEST" }
local DPAD = { Up = { "DPAD_UP", "LS_UP" }, Down = { "DPAD_DOWN", "LS_DOWN" },
  Left = { "DPAD_LEFT", "LS_LEFT" }, Right = { "DPAD_RIGHT", "LS_RIGHT" } }
local function with_dpad(t) for k, v in pairs(DPAD) do t[k] = v end return t end

local MAPS = {
  -- NesHawk/QuickNES: NESControllers.cs ControllerNES "0A".."0Right", merged as "P1 A" .. "P1 Right".
  NES = { prefix = "P1 ", buttons = with_dpad { A = { "SOUTH" }, B = { "EAST", "WEST" },
    Start = { "START" }, Select = { "BACK" } } },
  -- BSNES/Snes9x: BsnesControllers.cs "0Up".."0Start" -> "P1 B", "P1 Y", ... Positional SNES layout.
  SNES = { prefix = "P1 ", buttons = with_dpad { B = { "SOUTH" }, A = { "EAST" }, Y = { "WEST" },
    X = { "NORTH" }, L = { "LEFT_SHOULDER", "LEFT_TRIGGER" }, R = { "RIGHT_SHOULDER", "RIGHT_TRIGGER" },
    Start = { "START" }, Select = { "BACK" } } },
  -- Gambatte: Gambatte.cs GbController "Up","Down","Left","Right","Start","Select","B","A" (no
  -- prefix); GBHawk names them "P1 Up" ...: the joypad.get() check picks whichever exists.
  GB = { prefix = "", buttons = with_dpad { A = { "SOUTH" }, B = { "EAST", "WEST" },
    Start = { "START" }, Select = { "BACK" } } },
  -- mGBA: GBA.cs GBAController "Up".."R" (no prefix).
  GBA = { prefix = "", buttons = with_dpad { A = { "SOUTH" }, B = { "EAST", "WEST" },
    L = { "LEFT_SHOULDER", "LEFT_TRIGGER" }, R = { "RIGHT_SHOULDER", "RIGHT_TRIGGER" },
    Start = { "START" }, Select = { "BACK" } } },
  -- Genesis Plus GX: GPGXControlConverter.cs "P{n} {Name}", 3/6-button pads. Sega's own Xbox layout:
  -- A=X, B=A, C=B, X=LB, Y=Y, Z=RB.
  GEN = { prefix = "P1 ", buttons = with_dpad { A = { "WEST" }, B = { "SOUTH" }, C = { "EAST" },
    X = { "LEFT_SHOULDER" }, Y = { "NORTH" }, Z = { "RIGHT_SHOULDER" },
    Start = { "START" }, Mode = { "BACK" } } },
  -- Mupen64Plus: N64Input.cs "P1 DPad U".."P1 C Left", axes "P1 X Axis"/"P1 Y Axis" in -128..127,
  -- stick right = +X, stick up = +Y. Left stick -> analog stick, right stick -> C buttons.
  N64 = { prefix = "P1 ", buttons = { A = { "SOUTH" }, B = { "WEST", "EAST" }, Z = { "LEFT_TRIGGER" },
    L = { "LEFT_SHOULDER" }, R = { "RIGHT_SHOULDER", "RIGHT_TRIGGER" }, Start = { "START" },
    ["DPad U"] = { "DPAD_UP" }, ["DPad D"] = { "DPAD_DOWN" }, ["DPad L"] = { "DPAD_LEFT" },
    ["DPad R"] = { "DPAD_RIGHT" }, ["C Up"] = { "RS_UP" }, ["C Down"] = { "RS_DOWN" },
    ["C Left"] = { "RS_LEFT" }, ["C Right"] = { "RS_RIGHT" } },
    analog = { x = "X Axis", y = "Y Axis", scale = 127 } },
}
-- emu.getsystemid() values (VSystemID.Raw) that share a pad with one of the maps above.
local SYSTEM_ALIASES = { GBC = "GB", SGB = "SNES", ["32X"] = "GEN" }

-- Resolve a map's short names to the running core's names (`available`: set of joypad.get() keys).
local function resolve_map(map, available)
  local function name_of(short)
    if not available or next(available) == nil then return map.prefix .. short end
    for _, cand in ipairs({ map.prefix .. short, short, "P1 " .. short }) do
      if available[cand] ~= nil then return cand end
    end
  end
  local r = { buttons = {}, missing = {} }
  for short, inputs in pairs(map.buttons) do
    local full = name_of(short)
    if full then r.buttons[full] = inputs else r.missing[#r.missing + 1] = short end
  end
  if map.analog then -- joypad.get() lists axes too (ControllerExtensions.ToDictionary)
    local x, y = name_of(map.analog.x), name_of(map.analog.y)
    if x and y then r.analog = { x = x, y = y, scale = map.analog.scale }
    else r.missing[#r.missing + 1] = map.analog.x .. "/" .. map.analog.y end
  end
  table.sort(r.missing)
  return r
end

-- One action (21 buttons, left stick, right stick) -> joypad.set table and joypad.setanalog table.
local function stick(v)
  if type(v) ~= "table" then return { 0, 0 } end
  return { tonumber(v[1]) or 0, tonumber(v[2]) or 0 }
end

local function action_to_pad(rmap, buttons, jl, jr, cfg)
  if type(buttons) ~= "table" then buttons = {} end
  jl, jr = stick(jl), stick(jr)
  local on = {}
  for i, name in ipairs(MODEL_BUTTONS) do on[name] = (tonumber(buttons[i]) or 0) > 0.5 end
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
  local analog
  if rmap.analog then
    local x, y, s = jl[1], -jl[2], rmap.analog.scale -- the model's y points down, BizHawk's up
    if math.sqrt(x * x + y * y) < cfg.analog_deadzone then x, y = 0, 0 end
    local function axis(v) return math.max(-s - 1, math.min(s, math.floor(v * s + 0.5))) end
    analog = { [rmap.analog.x] = axis(x), [rmap.analog.y] = axis(y) }
  end
  return pad, analog
end

----------------------------------------------------------------------------------------------------
-- Transports: connect(host, port, timeout) / read_file(path) -> payload, length /
-- send(header, payload) / receive_line(timeout, chunk) / close(). Failures return nil, message.
----------------------------------------------------------------------------------------------------
local function first_line(e) return (tostring(e):match("^[^\r\n]*")) end

-- Inside BizHawk: .NET's System.Net.Sockets.TcpClient through NLua's luanet (no native modules).
local function dotnet_transport()
  local luanet = rawget(_G, "luanet")
  pcall(luanet.load_assembly, "System")
  local TcpClient = luanet.import_type("System.Net.Sockets.TcpClient")
  local File = luanet.import_type("System.IO.File")
  local Encoding = luanet.import_type("System.Text.Encoding")
  local function new_bytes(n) -- byte[n]: NLua calls an array type as a constructor; else Array.CreateInstance
    local ok, arr = pcall(luanet.import_type("System.Byte[]"), n)
    if ok and arr then return arr end
    local Byte = luanet.ctype(luanet.import_type("System.Byte"))
    return luanet.import_type("System.Array").CreateInstance(Byte, n)
  end
  local T, tcp, stream, buf, rbuf = { reads = 0 }, nil, nil, "", nil
  function T.close()
    if tcp then pcall(function() tcp:Close() end) end
    tcp, stream, buf = nil, nil, ""
  end
  function T.connect(host, port, timeout)
    local ok, err = pcall(function()
      local c = TcpClient()
      local task = c:ConnectAsync(host, port)
      if not task:Wait(math.floor(timeout * 1000)) then c:Close(); error("connect timed out") end
      c.NoDelay = true
      tcp, stream, buf = c, c:GetStream(), ""
    end)
    if ok then return true end
    T.close(); return nil, first_line(err)
  end
  function T.read_file(path)
    local ok, bytes = pcall(File.ReadAllBytes, path)
    if not ok then return nil, first_line(bytes) end
    return bytes, bytes.Length
  end
  function T.send(header, payload)
    local ok, err = pcall(function()
      local h = Encoding.UTF8:GetBytes(header)
      stream:Write(h, 0, h.Length)
      stream:Write(payload, 0, payload.Length)
    end)
    if ok then return true end
    return nil, first_line(err)
  end
  function T.receive_line(timeout, chunk)
    local ok, res = pcall(function()
      if not rbuf or rbuf.Length ~= chunk then rbuf = new_bytes(chunk) end
      tcp.ReceiveTimeout = math.floor(timeout * 1000) -- a Read past it throws
      while true do
        local nl = buf:find("\n", 1, true)
        if nl then local line = buf:sub(1, nl - 1); buf = buf:sub(nl + 1); return line end
        local n = stream:Read(rbuf, 0, chunk)
        if n <= 0 then error("server closed the connection") end
        T.reads = T.reads + 1
        buf = buf .. Encoding.UTF8:GetString(rbuf, 0, n)
      end
    end)
    if ok then return res end
    return nil, first_line(res)
  end
  return T, "dotnet"
end

-- Outside BizHawk (tests, other hosts): LuaSocket. Reads return whatever has arrived, up to `chunk`.
local function luasocket_transport()
  local socket = require("socket")
  local T, sock, buf = { reads = 0 }, nil, ""
  function T.close()
    if sock then sock:close() end
    sock, buf = nil, ""
  end
  function T.connect(host, port, timeout)
    local s = socket.tcp()
    s:settimeout(timeout)
    local ok, err = s:connect(host, port)
    if not ok then s:close(); return nil, err end
    s:setoption("tcp-nodelay", true)
    sock, buf = s, ""
    return true
  end
  function T.read_file(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local data = f:read("a"); f:close()
    return data, #data
  end
  function T.send(header, payload)
    sock:settimeout(CONFIG.reply_timeout)
    local ok, err = sock:send(header .. payload)
    if ok then return true end
    return nil, err
  end
  function T.receive_line(timeout, chunk)
    local deadline = socket.gettime() + timeout
    while true do
      local nl = buf:find("\n", 1, true)
      if nl then local line = buf:sub(1, nl - 1); buf = buf:sub(nl + 1); return line end
      local left = deadline - socket.gettime()
      if left <= 0 then return nil, "no reply within " .. timeout .. " s" end
      if sock:dirty() or #socket.select({ sock }, nil, left) > 0 then
        sock:settimeout(0)
        local data, err, partial = sock:receive(chunk)
        data = data or partial
        if data and #data > 0 then buf = buf .. data; T.reads = T.reads + 1 end
        if err == "closed" then return nil, "server closed the connection" end
      end
    end
  end
  return T, "luasocket"
end

local function make_transport(kind)
  local auto = kind == "auto"
  if kind == "dotnet" or (auto and rawget(_G, "luanet")) then return dotnet_transport() end
  if kind == "luasocket" or (auto and pcall(require, "socket")) then return luasocket_transport() end
  error("no TCP transport: neither luanet (BizHawk) nor LuaSocket is available", 0)
end

----------------------------------------------------------------------------------------------------
-- The loop: screenshot -> predict -> play the chunk; keep the game running whatever the server does.
----------------------------------------------------------------------------------------------------
local function log(msg) ((console and console.log) or print)("[nitrogen] " .. msg) end

local function default_frame_path()
  local dir = os.getenv("TEMP") or os.getenv("TMPDIR")
  local sep = package and package.config and package.config:sub(1, 1) or "/"
  return (dir and (dir .. sep) or "") .. "nitrogen_frame.png"
end

local function run()
  local cfg = CONFIG
  local frame, status, retry_at = 0, "starting", nil
  local function advance()
    if cfg.show_status and gui and gui.text then
      local wait = retry_at and math.ceil((retry_at - frame) / 60)
      gui.text(2, 2, "NitroGen: " .. status .. ((wait and wait > 0) and (" in %d s"):format(wait) or ""))
    end
    emu.frameadvance()
    frame = frame + 1
  end
  local function set_status(s, quiet) if s ~= status then status = s; if not quiet then log(s) end end end

  local system = cfg.console or emu.getsystemid()
  while system == "NULL" do
    set_status("waiting for a ROM"); advance(); system = cfg.console or emu.getsystemid()
  end
  local map = MAPS[system] or MAPS[SYSTEM_ALIASES[system] or ""]
  if not map then
    error(("console %q has no button map; supported: NES SNES GB GBC GBA GEN N64"):format(system), 0)
  end
  local available = {}
  local ok_get, current = pcall(joypad.get)
  if ok_get and type(current) == "table" then for k in pairs(current) do available[k] = true end end
  local rmap = resolve_map(map, available)
  if #rmap.missing > 0 then log("this core's pad has no " .. table.concat(rmap.missing, ", ")) end

  local neutral = {}
  for full in pairs(rmap.buttons) do neutral[full] = false end
  local function clear_pad(release_analog)
    joypad.set(neutral)
    if rmap.analog then
      -- setanalog holds an axis until it is given a non-number; "" hands the stick back to the user.
      local v = release_analog and "" or 0
      joypad.setanalog({ [rmap.analog.x] = v, [rmap.analog.y] = v })
    end
  end
  local function idle() clear_pad(false); advance() end
  if event and event.onexit then event.onexit(function() clear_pad(true) end, "nitrogen_clear_pad") end
  if client.setscreenshotosd then pcall(client.setscreenshotosd, false) end -- keep our text out of the frames

  local transport, transport_name = make_transport(cfg.transport)
  local frame_path = cfg.frame_path or default_frame_path()
  log(("%s via %s, server %s:%d"):format(system, transport_name, cfg.host, cfg.port))

  local connected, next_try, backoff, session_calls, answered = false, 0, cfg.retry_min_frames, 0, 0
  local function request()
    local shot_ok, shot_err = pcall(client.screenshot, frame_path)
    if not shot_ok then return nil, "screenshot failed: " .. first_line(shot_err), true end
    local payload, len = transport.read_file(frame_path)
    if not payload then return nil, "screenshot unreadable: " .. tostring(len), true end
    local header = ('{"type":"predict","len":%d,"resize_mode":%s'):format(len, json_string(cfg.resize_mode))
    if cfg.seed_base then header = header .. (',"seed":%d'):format(cfg.seed_base + session_calls) end
    local ok, err = transport.send(header .. "}\n", payload)
    if not ok then return nil, "send failed: " .. tostring(err) end
    session_calls = session_calls + 1
    local line, rerr = transport.receive_line(cfg.reply_timeout, cfg.read_chunk)
    if not line then return nil, "receive failed: " .. tostring(rerr) end
    local dok, reply = pcall(json.decode, line)
    if not dok then return nil, "bad reply: " .. reply end
    if type(reply) ~= "table" then return nil, "bad reply: not an object" end
    local p = reply.pred
    if reply.status == "ok" and not (type(p) == "table" and type(p.buttons) == "table"
        and type(p.j_left) == "table" and type(p.j_right) == "table"
        and #p.j_left >= #p.buttons and #p.j_right >= #p.buttons) then
      return nil, "bad reply: pred needs buttons, j_left and j_right of one length"
    end
    return reply
  end

  while not cfg.max_steps or answered < cfg.max_steps do
    if not connected then
      if frame >= next_try then
        local ok, err = transport.connect(cfg.host, cfg.port, cfg.connect_timeout)
        if ok then
          connected, backoff, session_calls, retry_at = true, cfg.retry_min_frames, 0, nil
          set_status("connected to " .. cfg.host .. ":" .. cfg.port)
        else
          next_try, backoff = frame + backoff, math.min(backoff * 2, cfg.retry_max_frames)
          retry_at = next_try
          set_status(("server %s:%d unreachable (%s), retrying"):format(cfg.host, cfg.port, tostring(err)))
        end
      end
      if not connected then idle() end
    else
      local reply, err, local_problem = request()
      if not reply then
        set_status(err)
        if not local_problem then transport.close(); connected, next_try = false, frame end
        idle()
      elseif reply.status ~= "ok" then
        answered = answered + 1
        set_status("server error: " .. tostring(reply.message or reply.status))
        idle()
      else
        answered = answered + 1
        local pred = reply.pred
        local frames = math.max(1, math.floor(cfg.frames_per_action or tonumber(reply["repeat"]) or 1))
        local n = #pred.buttons
        if cfg.actions_per_step then n = math.min(n, cfg.actions_per_step) end
        set_status(("playing: step %d, %d actions x %d frames"):format(answered, n, frames), true)
        if n == 0 then idle() end -- an empty chunk must not stall the emulator
        for i = 1, n do
          local pad, analog = action_to_pad(rmap, pred.buttons[i], pred.j_left[i], pred.j_right[i], cfg)
          for _ = 1, frames do -- joypad.set only overrides the coming frame (JoypadApi.Set): repeat it
            joypad.set(pad)
            if analog then joypad.setanalog(analog) end
            advance()
          end
        end
      end
    end
  end
  clear_pad(true)
  transport.close()
  log(("stopped after %d answered requests, %d socket reads"):format(answered, transport.reads))
end

local M = { json = json, MAPS = MAPS, MODEL_BUTTONS = MODEL_BUTTONS, resolve_map = resolve_map,
  action_to_pad = action_to_pad, make_transport = make_transport, CONFIG = CONFIG, run = run }
if rawget(_G, "NITROGEN_LIBRARY") then return M end
run()
