-- jsonl.lua: a JSON encoder for the test harness's logs (the script under test only decodes).
-- Empty tables encode as {}; `null` (optional) is a sentinel value that encodes as null.
local M = {}

function M.encode(v, null)
  local t = type(v)
  if v == nil or (null ~= nil and v == null) then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return math.type(v) == "integer" and tostring(v) or ("%.17g"):format(v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
  end
  if t ~= "table" then return '"' .. t .. '"' end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if #keys > 0 and #keys == #v then
    local parts = {}
    for i = 1, #v do parts[i] = M.encode(v[i], null) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = M.encode(tostring(k)) .. ":" .. M.encode(v[k], null) end
  return "{" .. table.concat(parts, ",") .. "}"
end

return M
