-- nitrogen_mgba.lua: let the NitroGen policy play a Game Boy, Game Boy Color or GBA game in mGBA 0.10+
-- (Tools > Scripting, File > Load script), with nitrogen_core.lua in the same folder. A nitrogen-server
-- must be reachable on its newline-JSON TCP port (default 5556). Protocol: docs/protocol.md.
-- mGBA runs scripts from its frame callback, which must never wait: each step takes a screenshot and
-- sends it, the game runs on with nothing pressed while the reply is on its way (polled once a frame
-- with hasdata), then the predicted actions are played frame by frame. Stop it from the scripting
-- console with nitrogen.stop() (nitrogen.start() resumes), or with File > Reset scripting.

----------------------------------------------------------------------------------------------------
-- Configuration: put overrides here (every key and its default: nitrogen_core.lua, core.DEFAULTS),
-- or set the global NITROGEN_CONFIG to a table of overrides before loading this script.
----------------------------------------------------------------------------------------------------
local CONFIG = {
  -- host = "127.0.0.1", port = 5556,
  -- resize_mode = "stretch",   -- or "pad", "crop"
  -- allow_menu = false,
}

local core = require("nitrogen_core") -- mGBA's require looks in this script's folder first
local cfg = core.configure(CONFIG)
local FOLDER = core.script_folder()
local FRAMES_PER_SECOND = 60

local S = { frame = 0, phase = "connect", next_try = 0, backoff = cfg.retry_min_frames, calls = 0,
  answered = 0, status = nil, shown = nil, stopped = false, buf = "", callbacks = {} }
local statusbuf = cfg.show_status and console.createBuffer and console:createBuffer("NitroGen")

local M = { core = core, state = S } -- what the script exports (the global `nitrogen`)

local function log(msg) console:log("[nitrogen] " .. msg) end

local function show()
  local wait = S.retry_at and math.ceil((S.retry_at - S.frame) / FRAMES_PER_SECOND)
  local text = "NitroGen: " .. (S.status or "") .. ((wait and wait > 0) and (" in %d s"):format(wait) or "")
  if statusbuf and text ~= S.shown then statusbuf:clear(); statusbuf:print(text); S.shown = text end
end
local function set_status(s, quiet)
  if s ~= S.status then S.status = s; if not quiet then log(s) end end
end

-- The console's pad: nitrogen_core's GB / GBA map, names upper-cased into C.GB_KEY / C.GBA_KEY bits.
function M.setup_pad()
  local system = cfg.console or (emu:platform() == C.PLATFORM.GBA and "GBA" or "GB")
  local map, err = core.map_for(system)
  if not map then error(err, 0) end
  local keys = core.SYSTEM_ALIASES[system] == "GB" and C.GB_KEY or C[system .. "_KEY"]
  if not keys then error(("mGBA has no %s pad; this script plays GB, GBC and GBA games"):format(system), 0) end
  local available = {}
  for short in pairs(map.buttons) do if keys[short:upper()] then available[short] = true end end
  S.rmap, S.keys, S.system = core.resolve_map(map, available), keys, system
  if #S.rmap.missing > 0 then log("this console's pad has no " .. table.concat(S.rmap.missing, ", ")) end
end

function M.mask_of(pad)
  local mask = 0
  for name, on in pairs(pad) do if on then mask = mask | (1 << S.keys[name:upper()]) end end
  return mask
end

local function disconnect(status)
  if S.sock then S.sock:close() end
  S.sock, S.buf, S.phase, S.next_try = nil, "", "connect", S.frame
  emu:setKeys(0)
  if status then set_status(status) end
end

local function connect()
  if S.frame < S.next_try then return end
  -- mGBA 0.10's connect blocks until the OS answers (at once for a refused or local port).
  local sock, err = socket.connect(cfg.host, cfg.port)
  if not sock then
    S.next_try, S.retry_at = S.frame + S.backoff, S.frame + S.backoff
    S.backoff = math.min(S.backoff * 2, cfg.retry_max_frames)
    set_status(core.unreachable_status(cfg, err))
    return
  end
  S.sock, S.buf, S.phase, S.calls, S.backoff, S.retry_at = sock, "", "capture", 0, cfg.retry_min_frames, nil
  set_status("connected to " .. cfg.host .. ":" .. cfg.port)
end

local function capture()
  local path = cfg.frame_path or (FOLDER .. "nitrogen_frame.png")
  emu:screenshot(path) -- written before it returns
  local f, err = io.open(path, "rb")
  if not f then set_status("screenshot unreadable: " .. tostring(err)); return end
  local payload = f:read("a"); f:close()
  local data, sent = core.predict_header(#payload, cfg, S.calls) .. payload, 0
  while sent < #data do -- one request in flight at a time: it fits the socket's send buffer
    local n, serr = S.sock:send(data, sent + 1)
    if not n then return disconnect("send failed: " .. tostring(serr)) end
    sent = n
  end
  S.calls, S.phase, S.sent_at = S.calls + 1, "waiting", os.time()
  emu:setKeys(0) -- nothing is pressed while the reply is on its way
end

local function start_chunk(reply)
  S.answered = S.answered + 1
  if reply.status ~= "ok" then
    set_status("server error: " .. tostring(reply.message or reply.status))
    S.phase = "capture" -- the next frame tries again, the pad stays released
    if cfg.max_steps and S.answered >= cfg.max_steps then M.stop() end
    return
  end
  local n, frames = core.chunk_plan(reply, cfg)
  set_status(core.playing_status(S.answered, n, frames, reply), true)
  S.chunk, S.n, S.frames, S.index, S.held, S.phase = reply.pred, n, frames, 0, frames, "playing"
end

local function poll_reply()
  while not S.buf:find("\n", 1, true) do
    local ready, err = S.sock:hasdata()
    if err then return disconnect("receive failed: " .. tostring(err)) end
    if not ready then
      if os.difftime(os.time(), S.sent_at) > cfg.reply_timeout then
        return disconnect(("receive failed: no reply within %s s"):format(cfg.reply_timeout))
      end
      return
    end
    local data, rerr = S.sock:receive(cfg.read_chunk)
    if not data then -- readable but nothing to read: closed ("disconnected") or reset (an error code)
      local why = rerr == "disconnected" and "" or (" (" .. tostring(rerr) .. ")")
      return disconnect("receive failed: server closed the connection" .. why)
    end
    S.buf = S.buf .. data
  end
  local nl = S.buf:find("\n", 1, true)
  local line = S.buf:sub(1, nl - 1)
  S.buf = S.buf:sub(nl + 1)
  local reply, err = core.parse_reply(line)
  if not reply then return disconnect(err) end
  start_chunk(reply)
end

-- Sets the keys the next frame runs with; true once the whole chunk has been handed out.
local function play()
  if S.held >= S.frames then
    S.index, S.held = S.index + 1, 0
    if S.index > S.n then return true end
  end
  local i = S.index
  local pad = core.action_to_pad(S.rmap, S.chunk.buttons[i], S.chunk.j_left[i], S.chunk.j_right[i], cfg)
  emu:setKeys(M.mask_of(pad))
  S.held = S.held + 1
  return false
end

function M.stop(reason)
  if S.stopped then return end
  for _, id in ipairs(S.callbacks) do callbacks:remove(id) end
  S.callbacks, S.stopped = {}, true
  if S.sock then S.sock:close(); S.sock = nil end
  if emu then emu:setKeys(0) end
  set_status(reason or "stopped")
  show()
  log(("stopped after %d answered requests"):format(S.answered))
end

local function on_frame()
  S.frame = S.frame + 1
  if not S.rmap then M.setup_pad(); log(("%s, server %s:%d"):format(S.system, cfg.host, cfg.port)) end
  if S.phase == "playing" and play() then
    if cfg.max_steps and S.answered >= cfg.max_steps then return M.stop() end
    S.phase = "capture"
  end
  if S.phase == "connect" then connect()
  elseif S.phase == "capture" then capture()
  elseif S.phase == "waiting" then
    poll_reply()
    -- a reply just came: its first action is set now, for the coming frame
    if S.phase == "playing" and play() then S.phase = "capture" end
  end
  if not S.stopped then show() end
end

function M.start()
  if not S.stopped and #S.callbacks > 0 then return end
  S.stopped, S.phase, S.next_try = false, "connect", S.frame
  -- mGBA drops errors raised in callbacks without a word: say it and stop instead.
  local function guarded(fn)
    return function()
      local ok, err = pcall(fn)
      if not ok then console:error("[nitrogen] " .. tostring(err)); M.stop("error: " .. tostring(err)) end
    end
  end
  S.callbacks = {
    callbacks:add("frame", guarded(function() if emu then on_frame() end end)),
    callbacks:add("reset", guarded(function() if S.sock then disconnect() end end)),
    callbacks:add("shutdown", guarded(function()
      if emu then disconnect() end
      S.rmap = nil
      set_status("waiting for a game")
    end)),
  }
  set_status(emu and "starting" or "waiting for a game")
end

if rawget(_G, "NITROGEN_LIBRARY") then return M end
nitrogen = M -- the scripting console's handle: nitrogen.stop(), nitrogen.start()
M.start()
