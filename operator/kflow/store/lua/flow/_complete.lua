--[[
  Include: complete one active node whose token the caller checked. Needs flow/_keys, _clock
  and flow/_lib. The node becomes completed with `value`; every parent waiting on it has one
  dependency less (a parent whose last dependency settled goes into `out`); the flow
  succeeds when no root is left and every other node has settled too.
]]
local function complete_checked(node, value, phase, now, out)
  redis.call('HSET', K_RESULT, node, value)
  redis.call('HDEL', K_TOKEN, node)
  set_state(node, 'active', 'completed')
  emit('completed', node)
  local parents = list_of(K_PARENTS, node)
  for _, p in ipairs(parents) do child_settled(p, now, out) end
  if #parents == 0 then redis.call('HINCRBY', K_META, 'roots_left', -1) end
  if phase == 'Running' then maybe_succeed(now) end
end

--[[
  An attempt that stored its result (flow/store-result) has returned: its side effects are
  committed. When such an attempt is then reported failed, lost or stalled (its pod died
  between storing and exiting, its Job vanished before the operator read it), it completes
  with that value instead of running again. start.lua clears the result of a new attempt, so
  a stored value always belongs to the attempt the caller's token fenced. True if completed.
]]
local function complete_stored(node, now, out)
  local stored = redis.call('HGET', K_RESULT, node)
  if not stored then return false end
  complete_checked(node, stored, redis.call('HGET', K_META, 'phase'), now, out)
  return true
end
