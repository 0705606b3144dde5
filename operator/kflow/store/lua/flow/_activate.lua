--[[
  Include: start a fully written flow, Pending -> Running (flow/activate.lua). Needs
  flow/_keys, _clock and flow/_lib. Returns the phase after the call, "Missing", or
  "incomplete" when not every chunk is written yet.
]]
local function activate_flow()
  local m = redis.call('HMGET', K_META, 'phase', 'written', 'chunks')
  if not m[1] then return 'Missing' end
  if m[1] ~= 'Pending' then return m[1] end
  if tonumber(m[2]) < tonumber(m[3]) then return 'incomplete' end
  redis.call('HSET', K_META, 'phase', 'Running', 'started_at', now_text())
  note_meta('phase', 'Running')
  emit('flow', '', 'phase', 'Running')
  return 'Running'
end
