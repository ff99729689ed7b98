-- nitrogen_bizhawk.lua: let the NitroGen policy play a BizHawk game (BizHawk 2.9+, Lua 5.4).
-- Load it from Tools > Lua Console > Script > Open Script, with nitrogen_core.lua in the same folder.
-- A nitrogen-server must be reachable on its newline-JSON TCP port (default 5556). Protocol:
-- docs/protocol.md. Each step: screenshot, send, pause the emulator while the reply is on its way
-- (the window stays responsive and Stop works), then play the predicted actions frame by frame.

----------------------------------------------------------------------------------------------------
-- Configuration: put overrides here (every key and its default: nitrogen_core.lua, core.DEFAULTS),
-- or set the global NITROGEN_CONFIG to a table of overrides.
----------------------------------------------------------------------------------------------------
local CONFIG = {
  -- host = "127.0.0.1", port = 5556,
  -- resize_mode = "stretch",   -- or "pad", "crop"
  -- allow_menu = false,
}

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or ""
if here ~= "" and not package.path:find(here .. "?.lua", 1, true) then
  package.path = here .. "?.lua;" .. package.path
end
local core = require("nitrogen_core")

-- An error as one line. .NET exceptions reach pcall as NLua's LuaScriptException, whose text is only
-- "A .NET exception occured in user-code"; the reason is the innermost InnerException's Message.
local function error_text(e)
  if type(e) ~= "string" then
    local inner, depth = e, 0
    while depth < 8 do
      local ok, nxt = pcall(function() return inner.InnerException end)
      if not ok or nxt == nil then break end
      inner, depth = nxt, depth + 1
    end
    local ok, msg = pcall(function() return inner.Message end)
    e = (ok and type(msg) == "string" and depth > 0) and msg or tostring(e)
  end
  return (tostring(e):match("^[^\r\n]*"))
end

----------------------------------------------------------------------------------------------------
-- Transports: connect(host, port, timeout) / read_file(path) -> payload, length /
-- send(header, payload, timeout) / poll_line(chunk) -> a complete line, or nil (nothing yet), or
-- nil and an error / now() -> seconds / close(). Nothing here blocks for longer than its timeout.
----------------------------------------------------------------------------------------------------

-- Inside BizHawk: .NET's System.Net.Sockets.TcpClient through NLua's luanet (no native modules).
local function dotnet_transport()
  local luanet = rawget(_G, "luanet")
  pcall(luanet.load_assembly, "System")
  local TcpClient = luanet.import_type("System.Net.Sockets.TcpClient")
  local SelectRead = luanet.import_type("System.Net.Sockets.SelectMode").SelectRead
  local File = luanet.import_type("System.IO.File")
  local Encoding = luanet.import_type("System.Text.Encoding")
  local clock = luanet.import_type("System.Diagnostics.Stopwatch").StartNew()
  local function new_bytes(n) -- byte[n]: NLua calls an array type as a constructor; else Array.CreateInstance
    local ok, arr = pcall(luanet.import_type("System.Byte[]"), n)
    if ok and arr then return arr end
    local Byte = luanet.ctype(luanet.import_type("System.Byte"))
    return luanet.import_type("System.Array").CreateInstance(Byte, n)
  end
  local T, tcp, stream, buf, rbuf = { reads = 0 }, nil, nil, "", nil
  function T.now() return clock.ElapsedMilliseconds / 1000 end
  function T.close()
    if tcp then pcall(function() tcp:Close() end) end
    tcp, stream, buf = nil, nil, ""
  end
  function T.connect(host, port, timeout)
    local ok, err = pcall(function()
      local c = TcpClient()
      local task = c:ConnectAsync(host, port)
      if not task:Wait(math.floor(timeout * 1000)) then c:Close(); error("connect timed out", 0) end
      c.NoDelay = true
      tcp, stream, buf = c, c:GetStream(), ""
    end)
    if ok then return true end
    T.close(); return nil, error_text(err)
  end
  function T.read_file(path)
    local ok, bytes = pcall(File.ReadAllBytes, path)
    if not ok then return nil, error_text(bytes) end
    return bytes, bytes.Length
  end
  function T.send(header, payload, timeout)
    local ok, err = pcall(function()
      tcp.SendTimeout = math.floor(timeout * 1000) -- a Write that cannot go through throws after this
      local h = Encoding.UTF8:GetBytes(header)
      stream:Write(h, 0, h.Length)
      stream:Write(payload, 0, payload.Length)
    end)
    if ok then return true end
    return nil, error_text(err)
  end
  function T.poll_line(chunk)
    local ok, line = pcall(function()
      if not rbuf or rbuf.Length ~= chunk then rbuf = new_bytes(chunk) end
      while not buf:find("\n", 1, true) do
        -- Poll first: readable with nothing available means the server closed the connection.
        local readable = tcp.Client:Poll(0, SelectRead)
        if tcp.Available <= 0 then
          if readable then error("server closed the connection", 0) end
          return nil
        end
        local n = stream:Read(rbuf, 0, math.min(chunk, tcp.Available))
        if n <= 0 then error("server closed the connection", 0) end
        T.reads = T.reads + 1
        buf = buf .. Encoding.UTF8:GetString(rbuf, 0, n)
      end
      local nl = buf:find("\n", 1, true)
      local l = buf:sub(1, nl - 1); buf = buf:sub(nl + 1)
      return l
    end)
    if ok then return line end
    return nil, error_text(line)
  end
  return T, "dotnet"
end

-- Outside BizHawk (tests, other hosts): LuaSocket.
local function luasocket_transport()
  local socket = require("socket")
  local T, sock, buf = { reads = 0, now = socket.gettime }, nil, ""
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
  function T.send(header, payload, timeout)
    sock:settimeout(timeout)
    local ok, err = sock:send(header .. payload)
    if ok then return true end
    return nil, err
  end
  function T.poll_line(chunk)
    sock:settimeout(0)
    while not buf:find("\n", 1, true) do
      local data, err, partial = sock:receive(chunk)
      data = data or partial
      if data and #data > 0 then buf = buf .. data; T.reads = T.reads + 1 end
      if err == "closed" and not buf:find("\n", 1, true) then return nil, "server closed the connection" end
      if not data or #data < chunk then break end
    end
    local nl = buf:find("\n", 1, true)
    if not nl then return nil end
    local line = buf:sub(1, nl - 1); buf = buf:sub(nl + 1)
    return line
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

local function run()
  local cfg = core.configure(CONFIG)
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
  local map, map_err = core.map_for(system)
  if not map then error(map_err, 0) end
  local available = {}
  local ok_get, current = pcall(joypad.get)
  if ok_get and type(current) == "table" then for k in pairs(current) do available[k] = true end end
  local rmap = core.resolve_map(map, available)
  if #rmap.missing > 0 then log("this core's pad has no " .. table.concat(rmap.missing, ", ")) end

  local transport, transport_name = make_transport(cfg.transport)
  local neutral, paused_by_us, osd_to_restore = {}, false, false
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
  -- Whatever way the script ends (Stop, the console closed, an error, max_steps): release the pad,
  -- unpause, restore the user's screenshot setting, close the socket. Closing the Lua console runs
  -- only onconsoleclose handlers, stopping the script only onexit handlers: register both.
  local function shutdown()
    pcall(clear_pad, true)
    if paused_by_us then pcall(client.unpause); paused_by_us = false end
    if osd_to_restore then pcall(client.setscreenshotosd, true); osd_to_restore = false end
    transport.close()
  end
  if event and event.onexit then event.onexit(shutdown, "nitrogen_shutdown") end
  if event and event.onconsoleclose then event.onconsoleclose(shutdown, "nitrogen_console_close") end
  -- Our status text must stay out of the frames the model sees. setscreenshotosd is saved in the
  -- user's config, so it is switched off only if it was on, and switched back on at the end.
  local ok_conf, capture_osd = pcall(function() return client.getconfig().Screenshot_CaptureOSD end)
  if ok_conf and capture_osd == true and pcall(client.setscreenshotosd, false) then osd_to_restore = true end

  -- BizHawk runs scripts in the script's folder: a relative path needs no environment variable
  -- (the %TEMP% path broke under user names outside the ANSI code page).
  local frame_path = cfg.frame_path or "nitrogen_frame.png"
  log(("%s via %s, server %s:%d"):format(system, transport_name, cfg.host, cfg.port))

  -- Wait for the reply with the emulator paused, yielding to BizHawk so that its window keeps
  -- drawing and its Stop button works; a user who had paused already stays paused.
  local function await_line()
    local deadline = transport.now() + cfg.reply_timeout
    if not client.ispaused() then client.pause(); paused_by_us = true end
    local line, err
    while true do
      line, err = transport.poll_line(cfg.read_chunk)
      if line or err then break end
      if transport.now() > deadline then err = ("no reply within %s s"):format(cfg.reply_timeout); break end
      emu.yield()
    end
    if paused_by_us then client.unpause(); paused_by_us = false end
    return line, err
  end

  local connected, next_try, backoff, session_calls, answered = false, 0, cfg.retry_min_frames, 0, 0
  local function request()
    local shot_ok, shot_err = pcall(client.screenshot, frame_path)
    if not shot_ok then return nil, "screenshot failed: " .. error_text(shot_err), true end
    local payload, len = transport.read_file(frame_path)
    if not payload then return nil, "screenshot unreadable: " .. tostring(len), true end
    local ok, err = transport.send(core.predict_header(len, cfg, session_calls), payload, cfg.reply_timeout)
    if not ok then return nil, "send failed: " .. tostring(err) end
    session_calls = session_calls + 1
    local line, rerr = await_line()
    if not line then return nil, "receive failed: " .. tostring(rerr) end
    return core.parse_reply(line)
  end

  local function play(reply)
    local pred = reply.pred
    local n, frames = core.chunk_plan(reply, cfg)
    set_status(core.playing_status(answered, n, frames, reply), true)
    if n == 0 then idle() end -- an empty chunk must not stall the emulator
    for i = 1, n do
      local pad, analog = core.action_to_pad(rmap, pred.buttons[i], pred.j_left[i], pred.j_right[i], cfg)
      for _ = 1, frames do -- joypad.set only overrides the coming frame (JoypadApi.Set): repeat it
        joypad.set(pad)
        if analog then joypad.setanalog(analog) end
        advance()
      end
    end
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
          set_status(core.unreachable_status(cfg, err))
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
        play(reply)
      end
    end
  end
  local reads = transport.reads
  shutdown()
  log(("stopped after %d answered requests, %d socket reads"):format(answered, reads))
end

local M = setmetatable({ make_transport = make_transport, error_text = error_text, run = run },
  { __index = core })
if rawget(_G, "NITROGEN_LIBRARY") then return M end
run()
