--[[
  Fail an active attempt, fenced by its token. Infrastructure failures (pod evicted, node
  lost) go back to ready without spending an attempt, at most ARGV[5] times per node; other
  failures retry after backoff (fixed or exponential, capped by maxDelay, jittered) while
  attempts remain, then settle by the node's onFailure policy (see flow/_attempt-failure).

  Keys: the flow group (flow/_keys.lua); uses meta, error, requeues (and those of
  flow/_attempt-failure).
  ARGV[1] node   ARGV[2] token   ARGV[3] error text
  ARGV[4] "1" infrastructure failure / "0" failure of the node's own code
  ARGV[5] infrastructure retries allowed per node
  ARGV[6] jitter share 0..1 (drawn by the engine: Lua's random is deterministic)

  Returns (JSON): the flow-step envelope (flow/_reply) with one row as flow/_attempt-batch:
    {accepted, the node's queue, outcome, retry time ms or false}
    outcome "completed" (the attempt had stored its result: it completes with it, and
           never runs again), "requeued" (infrastructure, attempt not spent; time: now), "retry" (after
           backoff; time: when), "failed" (settled by onFailure), "cancelled" (the flow had
           ended and the failure was not the node's own: infrastructure, or the flow was
           cancelled), "stale" (token mismatch: nothing changed)
  Events: requeued, retry (attempt, at, due, error), failed|ignored|removed|cancelled;
  flow phase Failed or Succeeded.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence
-- @include flow/_reply
-- @include flow/_attempt-failure
-- @include flow/_complete
-- @include flow/_attempt-batch

return settle_attempts(1, 6, function(_, node, now, out)
  local err = ARGV[3]
  if complete_stored(node, now, out) then return 'completed', false end
  if ARGV[4] == '1' and redis.call('HGET', K_META, 'phase') == 'Running'
      and redis.call('HINCRBY', K_REQUEUES, 'i|' .. node, '1') <= tonumber(ARGV[5]) then
    redis.call('HSET', K_ERROR, node, err)
    requeue_without_attempt(node, now, out)
    emit('requeued', node, 'error', err)
    return 'requeued', now
  end
  local r = attempt_failed(node, err, now, tonumber(ARGV[6]), out, ARGV[4] == '1')
  return r[1], r[2]
end)
