--[[
  Include: start one node's attempt at once, as it leaves `old` (ready, delayed and due, or
  waiting for children that just settled). Needs flow/_keys, _clock, flow/_lib and
  flow/_inputs. What flow/start.lua does for a single node, and what a completion that hands
  over does for the node it makes ready (flow/_lib, HANDOVER). The caller has taken the node
  off the ready set, or never put it there.
  `data`, `listed`: the node's data and children list when the caller read them already
  (false: it has none; nil: read here).
  Returns the node's start row (flow/start.lua):
    {node, "ok", attempt, data JSON, timeout ms, waited ms, "0", inputs or false}
]]
start_one = function(node, old, token, owner, waited, with_inputs, data, listed)
  local attempt = redis.call('HINCRBY', K_ATTEMPT, node, '1')
  redis.call('HSET', K_TOKEN, node, token)
  redis.call('HSET', K_STATE, node, 'active')
  state_changed(node, old, 'active')
  if attempt > 1 then  -- what the attempt before left: its stored result, its progress
    redis.call('HDEL', K_RESULT, node)
    redis.call('HDEL', K_PROGRESS, node)
  end
  if data == nil then data = redis.call('HGET', K_DATA, node) end
  local spec = spec_of(node)
  local inputs = false
  if with_inputs then inputs = inputs_of(node, listed) end
  emit('started', node, 'attempt', int_text(attempt), 'owner', owner)
  return {node, 'ok', int_text(attempt), data or 'null', int_text(spec[S_TIMEOUT]),
          int_text(waited), '0', inputs}
end
