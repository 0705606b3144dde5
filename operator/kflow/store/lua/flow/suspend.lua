--[[
  Suspend a running flow: no new attempt starts (flow/start refuses); running ones finish.

  Keys: the flow group (flow/_keys.lua); uses meta.
  ARGV: none.
  Returns (JSON): the flow-step envelope (flow/_reply), no rows, queued empty; its phase is
    "Suspended" if the flow was Running.
  Events: flow suspended.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply

if flow_phase() == 'Running' and meta().suspended ~= '1' then
  redis.call('HSET', K_META, 'suspended', '1')
  note_meta('suspended', '1')
  emit('flow', '', 'suspended', '1')
end
return step_reply({}, {})
