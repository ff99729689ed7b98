-- mgba_gba_probe.lua: loads nitrogen_mgba.lua as a library (NITROGEN_LIBRARY) and logs, as one JSON
-- array, the key mask of each action in PROBE_ACTIONS (a JSON list of 21-button lists).
package.path = PROBE_PATH .. "/?.lua;" .. package.path
local M = dofile(PROBE_SCRIPT)
M.setup_pad()
local masks = {}
for _, buttons in ipairs(M.core.json.decode(PROBE_ACTIONS)) do
  local pad = M.core.action_to_pad(M.state.rmap, buttons, { 0, 0 }, { 0, 0 },
    M.core.configure())
  masks[#masks + 1] = tostring(M.mask_of(pad))
end
console:log("[" .. table.concat(masks, ",") .. "]")
HOST_EXIT = true
