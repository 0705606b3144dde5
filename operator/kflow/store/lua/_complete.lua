--[[
  Include: complete one active node whose token the caller checked. Needs _flow-keys, _now
  and _flow-lib. The node becomes completed with `value`; every parent waiting on it has one
  dependency less (a parent whose last dependency settled goes into `out`); a root
  completing may finish the flow (Succeeded when no root is left).
]]
local function complete_checked(node, value, phase, now, out)
  redis.call('HSET', K_RESULT, node, value)
  redis.call('HDEL', K_TOKEN, node)
  set_state(node, 'active', 'completed')
  emit('completed', node)
  local parents = list_of(K_PARENTS, node)
  for _, p in ipairs(parents) do child_settled(p, now, out) end
  if #parents == 0 then
    local left = redis.call('HINCRBY', K_META, 'roots_left', -1)
    if left <= 0 and phase == 'Running' then finish_flow('Succeeded', now) end
  end
end
