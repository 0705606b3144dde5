--[[
  Complete active attempts of one flow, one or a worker's batch in one call: each node
  becomes completed with its value, and every parent waiting on it has one dependency less;
  a parent whose last dependency settled becomes ready (or delayed by its start delay).
  Parents read the value from the result hash. The flow succeeds when no root is left and
  no other node is still to settle. An attempt whose token is stale or whose node already
  completed is refused on its own (nothing changes for it); the others still complete.

  One completion may hand over (flow/_lib, HANDOVER): when ARGV[1] names the worker and the
  flow is running, the first node the completion makes ready now on the completed node's
  queue starts at once under handed_token(token), for that worker to run next; it is not
  queued, and its start row comes back in the completion's row. A batch never hands over.

  Keys: the flow group (flow/_keys.lua); uses meta, result (and those of flow/_complete,
  flow/_start-one).
  ARGV[1] the worker that runs a node handed over (its owner name), or "": none
  ARGV[2..] quadruples: node, token, the node's queue name from the take or "" (then read
                   from its spec), value JSON or "" to use the value the attempt stored
                   earlier (store-result; no JSON text is empty)

  Returns (JSON): the flow-step envelope (flow/_reply) with rows as flow/_attempt-batch:
    {accepted, the node's queue, "completed" or "stale", false[, start row]} per quadruple
    start row: the node handed over, as flow/start.lua's rows (with inputs)
  Events: completed (node) per accepted attempt; started for a node handed over; flow phase
  Succeeded.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence
-- @include flow/_reply
-- @include flow/_attempt-failure
-- @include flow/_complete
-- @include flow/_attempt-batch
-- @include flow/_inputs
-- @include flow/_start-one

-- A batch reads and writes each hash once (flow/_complete: read_batch, write_batch). One
-- completion (a chain's step) goes the way of a single node instead, one command per read
-- and write: the batch's tables and loops cost Redis more than they save for one
-- (callgrind: 386,000 -> 324,000 instructions a call on the chain benchmark).
local batch, finish, held = nil, nil, nil
if #ARGV > 5 then
  -- Its completed events go as one entry (flow/_lib, emit); one completion's as plain
  -- entries, written at once.
  EVENT_BATCH = true
  batch = new_batch()
  read_batch(batch, 2, 4)
  finish = function(now, out) write_batch(batch, now, out) end
  held = function(node, token) return batch.tokens[node] == token end
elseif ARGV[1] ~= '' and #ARGV == 5 then
  local m = meta()
  if m.phase == 'Running' and m.suspended ~= '1' then
    local queue = ARGV[4]
    if queue == '' then queue = queue_of(ARGV[2]) end
    HANDOVER = {queue = queue, owner = ARGV[1], token = handed_token(ARGV[3])}
  end
end
return settle_attempts(2, 4, function(i, node, now, out)
  local value = ARGV[i + 3]
  if value == '' then value = redis.call('HGET', K_RESULT, node) or 'null' end
  local outcome = complete_checked(node, value, flow_phase(), now, out, batch)
  return outcome, false, HANDOVER and HANDOVER.row
end, 2, finish, held)
