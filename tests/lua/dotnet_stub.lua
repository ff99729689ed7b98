-- dotnet_stub.lua: a `luanet` global that imitates, over LuaSocket, the few .NET types the script's
-- BizHawk transport uses through NLua (System.Net.Sockets.TcpClient/Socket/SelectMode, System.IO.File,
-- System.Text.Encoding, System.Byte[], System.Diagnostics.Stopwatch), with NLua's call conventions:
-- Type(...) constructs, Type.Static(...), obj:Method(...), obj.Property. .NET semantics kept:
-- Available = bytes received and not read yet; Socket.Poll(0, SelectRead) = readable or closed;
-- SendTimeout/ReceiveTimeout 0 = wait forever. Failures raise what NLua hands to pcall: an exception
-- object whose own text says nothing ("A .NET exception occured in user-code") and whose
-- InnerException chain holds the real .NET exceptions.
local socket = require("socket")

local LUA_SCRIPT_EXCEPTION = { __tostring = function() return "A .NET exception occured in user-code" end }
local function dotnet_error(kind, msg, inner)
  local ex = { Message = msg, InnerException = inner, StackTrace = "   at " .. kind }
  error(setmetatable({ Message = "A .NET exception occured in user-code", InnerException = ex },
    LUA_SCRIPT_EXCEPTION), 0)
end

local function byte_array(s) return { Length = #s, s = s } end
local open = 0 -- connected TcpClients not closed yet: a script that forgets Close() leaves them open

-- Move whatever the kernel has for this client into its pending buffer (never blocks).
local function fill(client)
  if not client.sock or client.closed then return end
  client.sock:settimeout(0)
  local data, err, partial = client.sock:receive(65536)
  data = data or partial
  if data and #data > 0 then client.pending = client.pending .. data end
  if err == "closed" then client.closed = true end
end

local NetworkStream = {}
NetworkStream.__index = NetworkStream
function NetworkStream:Write(arr, offset, count)
  local c = self.client
  c.sock:settimeout(c.SendTimeout > 0 and c.SendTimeout / 1000 or nil)
  local ok, err = c.sock:send(arr.s:sub(offset + 1, offset + count))
  if not ok then
    dotnet_error("System.IO.IOException", "Unable to write data to the transport connection: " .. err .. ".",
      { Message = "Socket " .. err })
  end
end
function NetworkStream:Read(arr, offset, count)
  assert(offset == 0, "the stub supports offset 0 only")
  local c = self.client
  local deadline = c.ReceiveTimeout > 0 and socket.gettime() + c.ReceiveTimeout / 1000 or math.huge
  while #c.pending == 0 and not c.closed do -- Read blocks until at least one byte (or the timeout)
    local left = deadline - socket.gettime()
    if left <= 0 then
      dotnet_error("System.IO.IOException", "Unable to read data from the transport connection: timed out.")
    end
    socket.select({ c.sock }, nil, math.min(left, 1))
    fill(c)
  end
  local data = c.pending:sub(1, count)
  c.pending = c.pending:sub(#data + 1)
  arr.s, arr.Length = data .. arr.s:sub(#data + 1), math.max(arr.Length, #data)
  return #data
end

local SelectMode = { SelectRead = 0, SelectWrite = 1, SelectError = 2 }
local Socket = {}
Socket.__index = Socket
function Socket:Poll(microseconds, mode)
  assert(microseconds == 0 and mode == SelectMode.SelectRead, "the stub polls for reading without waiting")
  fill(self.client)
  return #self.client.pending > 0 or self.client.closed
end

local TcpClient = {}
TcpClient.__index = function(self, key)
  if key == "Connected" then return self.sock ~= nil end
  if key == "Available" then
    if not self.sock then dotnet_error("System.ObjectDisposedException", "Cannot access a disposed object.") end
    fill(self)
    return #self.pending
  end
  if key == "Client" then return setmetatable({ client = self }, Socket) end
  return TcpClient[key]
end
TcpClient.__newindex = function(self, key, value) rawset(self, key, value) end -- NoDelay, timeouts
function TcpClient:ConnectAsync(host, port)
  local client = self
  return { Wait = function(_, ms)
    local sock = socket.tcp()
    sock:settimeout(ms / 1000)
    local ok, err = sock:connect(host, port)
    if not ok then
      sock:close()
      if err == "timeout" then return false end
      local reason = err:gsub("^%l", string.upper)
      dotnet_error("System.AggregateException", "One or more errors occurred. (" .. reason .. ")",
        { Message = reason })
    end
    rawset(client, "sock", sock)
    open = open + 1
    return true
  end }
end
function TcpClient:GetStream() return setmetatable({ client = self }, NetworkStream) end
function TcpClient:Close()
  if self.sock then self.sock:close(); rawset(self, "sock", nil); open = open - 1 end
end

local TYPES = {
  ["System.Net.Sockets.TcpClient"] = setmetatable({}, { __call = function()
    return setmetatable({ ReceiveTimeout = 0, SendTimeout = 0, pending = "", closed = false }, TcpClient)
  end }),
  ["System.Net.Sockets.SelectMode"] = SelectMode,
  ["System.IO.File"] = { ReadAllBytes = function(path)
    local f = io.open(path, "rb")
    if not f then dotnet_error("System.IO.FileNotFoundException", "Could not find file '" .. path .. "'.") end
    local data = f:read("a"); f:close()
    return byte_array(data)
  end },
  ["System.Text.Encoding"] = { UTF8 = {
    GetBytes = function(_, s) return byte_array(s) end,
    GetString = function(_, arr, offset, count) return arr.s:sub(offset + 1, offset + count) end,
  } },
  ["System.Byte[]"] = setmetatable({}, { __call = function(_, n) return byte_array(("\0"):rep(n)) end }),
  ["System.Diagnostics.Stopwatch"] = { StartNew = function()
    local start = socket.gettime()
    return setmetatable({}, { __index = function(_, key)
      if key == "ElapsedMilliseconds" then return math.floor((socket.gettime() - start) * 1000) end
    end })
  end },
}

luanet = {
  load_assembly = function() end,
  import_type = function(name) return assert(TYPES[name], "stub has no type " .. name) end,
  open_clients = function() return open end, -- for the harness, not .NET
}
