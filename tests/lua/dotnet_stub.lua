-- dotnet_stub.lua: a `luanet` global that imitates, over LuaSocket, the few .NET types the script's
-- BizHawk transport uses through NLua (System.Net.Sockets.TcpClient, System.IO.File, System.Text.Encoding,
-- System.Byte[]), with NLua's call conventions: Type(...) constructs, Type.Static(...), obj:Method(...),
-- obj.Property. Failures raise multi-line errors as .NET exceptions surface in NLua.
local socket = require("socket")

local function dotnet_error(kind, msg)
  error(("%s: %s\n   at System.Net.Sockets.Socket.DoConnect(EndPoint endPointSnapshot)"):format(kind, msg), 0)
end

local function byte_array(s) return { Length = #s, s = s } end

local NetworkStream = {}
NetworkStream.__index = NetworkStream
function NetworkStream:Write(arr, offset, count)
  local ok, err = self.client.sock:send(arr.s:sub(offset + 1, offset + count))
  if not ok then dotnet_error("System.IO.IOException", "Unable to write data to the connection: " .. err) end
end
function NetworkStream:Read(arr, offset, count)
  assert(offset == 0, "the stub supports offset 0 only")
  local sock, timeout = self.client.sock, self.client.ReceiveTimeout
  if not sock:dirty() then
    local ready = socket.select({ sock }, nil, timeout > 0 and timeout / 1000 or nil)
    if #ready == 0 then dotnet_error("System.IO.IOException", "Unable to read data: timed out") end
  end
  sock:settimeout(0)
  local data, err, partial = sock:receive(count)
  data = data or partial or ""
  if #data == 0 and err == "closed" then return 0 end
  arr.s, arr.Length = data .. arr.s:sub(#data + 1), math.max(arr.Length, #data)
  return #data
end

local TcpClient = {}
TcpClient.__index = function(self, key)
  if key == "Connected" then return self.sock ~= nil end
  return TcpClient[key]
end
TcpClient.__newindex = function(self, key, value) rawset(self, key, value) end -- NoDelay, ReceiveTimeout
function TcpClient:ConnectAsync(host, port)
  local client = self
  return { Wait = function(_, ms)
    local sock = socket.tcp()
    sock:settimeout(ms / 1000)
    local ok, err = sock:connect(host, port)
    if not ok then
      sock:close()
      if err == "timeout" then return false end
      dotnet_error("System.AggregateException", "One or more errors occurred. (" .. err .. ")")
    end
    rawset(client, "sock", sock)
    return true
  end }
end
function TcpClient:GetStream() return setmetatable({ client = self }, NetworkStream) end
function TcpClient:Close() if self.sock then self.sock:close(); rawset(self, "sock", nil) end end

local TYPES = {
  ["System.Net.Sockets.TcpClient"] = setmetatable({}, { __call = function()
    return setmetatable({ ReceiveTimeout = 0 }, TcpClient)
  end }),
  ["System.IO.File"] = { ReadAllBytes = function(path)
    local f = io.open(path, "rb")
    if not f then error("System.IO.FileNotFoundException: Could not find file '" .. path .. "'.", 0) end
    local data = f:read("a"); f:close()
    return byte_array(data)
  end },
  ["System.Text.Encoding"] = { UTF8 = {
    GetBytes = function(_, s) return byte_array(s) end,
    GetString = function(_, arr, offset, count) return arr.s:sub(offset + 1, offset + count) end,
  } },
  ["System.Byte[]"] = setmetatable({}, { __call = function(_, n) return byte_array(("\0"):rep(n)) end }),
}

luanet = {
  load_assembly = function() end,
  import_type = function(name) return assert(TYPES[name], "stub has no type " .. name) end,
}
