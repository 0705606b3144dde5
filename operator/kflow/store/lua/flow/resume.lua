--[[
  Resume a suspended flow; the engine then re-queues the flow's ready set (reconciliation).

  Keys: the flow group (flow/_keys.lua); uses meta.
  ARGV: none.
  Returns (JSON): the flow-step envelope (flow/_reply), no rows, queued empty.
  Events: flow suspended 0.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply

if meta().suspended == '1' then
  redis.call('HDEL', K_META, 'suspended')
  note_meta('suspended', false)
  emit('flow', '', 'suspended', '0')
end
return step_reply({}, {})
