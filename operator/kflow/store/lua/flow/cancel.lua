--[[
  Cancel a flow that has not finished: phase Cancelled, nothing new starts. Running attempts
  are returned so the caller can stop them; if they still report, their outcome is recorded.

  Keys: the flow group (flow/_keys.lua); uses meta, token.
  ARGV: none.
  Returns (JSON): the flow-step envelope (flow/_reply), queued empty, one row per attempt
    still running: {node, token}
  Events: flow phase Cancelled.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply

local phase = flow_phase()
if phase == 'Pending' or phase == 'Running' then
  redis.call('HDEL', K_META, 'suspended')
  note_meta('suspended', false)
  finish_flow('Cancelled', now_ms())
  apply_expiry()
end
local active = {}
local t = redis.call('HGETALL', K_TOKEN)
for i = 1, #t, 2 do
  if t[i] ~= TOKEN_ANCHOR then active[#active + 1] = {t[i], t[i + 1]} end
end
return step_reply(active, {})
