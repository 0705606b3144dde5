--[[
  A map node cannot run over its items: its from node's value holds no list at its path.
  It fails for good at once (a list does not change by retrying), then its onFailure policy
  settles it as for any node whose attempts are used up.

  Keys: the flow group (flow/_keys.lua); uses meta, state, attempt (and the keys of
  settle_failure in flow/_attempt-failure).
  ARGV[1] map node   ARGV[2] error text
  Returns (JSON): the flow-step envelope (flow/_reply), one row {failed}: false when the map
    node was not expanding (nothing changed); queued holds parents the failure made ready.
  Events: failed (or ignored/removed) per node settled, flow phase when the flow ends.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply
-- @include flow/_attempt-failure

local node = ARGV[1]
if redis.call('HGET', K_META, 'phase') ~= 'Running'
    or redis.call('HGET', K_STATE, node) ~= 'expanding' then
  return step_reply({false}, {})
end
local now = now_ms()
local out = {}
redis.call('HSET', K_ATTEMPT, node, '1')  -- its one try at reading the list
if settle_failure(node, ARGV[2], now, out) then
  finish_flow('Failed', now)
else
  maybe_succeed(now)
end
return step_reply({true}, out)
