-- eval.lua SCRIPT SNIPPET: loads the BizHawk script as a library (NITROGEN_LIBRARY) and runs the Lua
-- file SNIPPET with `M` (the script's internals), `emit(value)` (prints one JSON line) and `unhex`.
package.path = (arg[0]:match("^(.*)[/\\]") or ".") .. "/?.lua;" .. package.path
local jsonl = require("jsonl")
NITROGEN_LIBRARY = true
local M = assert(loadfile(arg[1]))()
local env = setmetatable({
  M = M,
  emit = function(v) io.write(jsonl.encode(v, M.json.null), "\n") end,
  unhex = function(h) return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)) end,
}, { __index = _G })
assert(loadfile(arg[2], "t", env))()
