--[[
  Complete active attempts of one flow, one or a worker's batch in one call: each node
  becomes completed with its value, and every parent waiting on it has one dependency less;
  a parent whose last dependency settled becomes ready (or delayed by its start delay).
  Parents read the value from the result hash. The flow succeeds when no root is left and
  no other node is still to settle. An attempt whose token is stale or whose node already
  completed is refused on its own (nothing changes for it); the others still complete.

  Keys: the flow group (flow/_keys.lua); uses meta, result (and those of flow/_complete).
  ARGV quadruples: node, token, the node's queue name from the take or "" (then read from
                   its spec), value JSON or "" to use the value the attempt stored earlier
                   (store-result; no JSON text is empty)

  Returns (JSON): the flow-step envelope (flow/_reply) with rows as flow/_attempt-batch:
    {accepted, the node's queue, "completed" or "stale", false} per triple
  Events: completed (node) per accepted attempt; flow phase Succeeded.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence
-- @include flow/_reply
-- @include flow/_attempt-failure
-- @include flow/_complete
-- @include flow/_attempt-batch

-- A batch reads and writes each hash once (flow/_complete: read_batch, write_batch). One
-- completion (a chain's step) goes the way of a single node instead, one command per read
-- and write: the batch's tables and loops cost Redis more than they save for one
-- (callgrind: 386,000 -> 324,000 instructions a call on the chain benchmark).
local batch, finish, held = nil, nil, nil
if #ARGV > 4 then
  -- Its completed events go as one entry (flow/_lib, emit); one completion's as plain
  -- entries, written at once.
  EVENT_BATCH = true
  batch = new_batch()
  read_batch(batch, 1, 4)
  finish = function(now, out) write_batch(batch, now, out) end
  held = function(node, token) return batch.tokens[node] == token end
end
return settle_attempts(1, 4, function(i, node, now, out)
  local value = ARGV[i + 3]
  if value == '' then value = redis.call('HGET', K_RESULT, node) or 'null' end
  return complete_checked(node, value, flow_phase(), now, out, batch)
end, 2, finish, held)
