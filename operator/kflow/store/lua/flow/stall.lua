--[[
  Handle one expired queue lease: if the node is still active under that token, its
  attempt stalled (worker or pod vanished): back to ready without spending an attempt, up
  to ARGV[3] times per node, then the attempt fails as "stalled" (retry/onFailure apply).
  If the token no longer matches, the lease was left over (a crash between a flow step and
  a queue step): nothing changes here, and a node still ready is reported for re-queueing;
  but when the attempt's completion handed over (flow/complete.lua) and the node it started
  still runs under the handed token, that node had no lease of its own (its hold was to come
  with the queue step that never ran): it is the attempt that stalled.

  Keys: the flow group (flow/_keys.lua); uses meta, state, ready, requeues (and those of
  flow/_attempt-failure).
  ARGV[1] node   ARGV[2] token   ARGV[3] max stalls per node   ARGV[4] jitter share 0..1

  Returns (JSON): the flow-step envelope (flow/_reply) with one row as flow/_attempt-batch:
    {accepted, the node's queue, outcome, retry time ms or false}
    outcome "completed" (the attempt had stored its result: completed with it, never run
    again) | "requeued" | "retry" | "failed" | "cancelled" (the flow had ended) | "stale"
    (the lease was left over; queued then holds the node if it is still ready or delayed)
  Events: stalled; then as flow/fail.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence
-- @include flow/_reply
-- @include flow/_attempt-failure
-- @include flow/_complete

local node, token = ARGV[1], ARGV[2]
if not redis.call('HGET', K_META, 'phase') then
  return step_reply({{false, '', 'stale', false}}, {})
end
local now = now_ms()
local out = {}
if not holds(node, token) then
  -- Its completion may have handed over (flow/complete.lua) and the worker died before its
  -- queue step, which frees this lease and holds the node handed over in one call: then
  -- that node runs under no lease, and it is the one that stalled.
  local handed = handed_token(token)
  if holds(node, handed) then  -- a node that waited for children it added runs again
    token = handed
  else
    for _, p in ipairs(parents_of(node)) do
      if holds(p, handed) then
        node, token = p, handed
        break
      end
    end
  end
end
if not holds(node, token) then
  local st = redis.call('HGET', K_STATE, node)
  if st == 'ready' or st == 'delayed' then
    local spec = spec_of(node)
    local due = 0
    if st == 'delayed' then due = tonumber(redis.call('ZSCORE', K_READY, node) or '0') end
    out[1] = {node, spec[S_QUEUE], rank_of(spec), due}
  end
  return step_reply({{false, queue_of(node), 'stale', false}}, out)
end
if complete_stored(node, now, out) then
  apply_expiry()
  return step_reply({{true, queue_of(node), 'completed', false}}, out)
end
emit('stalled', node)
local stalls = redis.call('HINCRBY', K_REQUEUES, 's|' .. node, '1')
local outcome, at = 'requeued', false
if stalls <= tonumber(ARGV[3]) and redis.call('HGET', K_META, 'phase') == 'Running' then
  requeue_without_attempt(node, now, out)
else
  local r = attempt_failed(node, 'stalled: the attempt lost its lease ' .. stalls .. ' times',
    now, tonumber(ARGV[4]), out, true)
  outcome, at = r[1], r[2]
end
apply_expiry()
return step_reply({{true, queue_of(node), outcome, at}}, out)
