--[[
  Fail an active attempt, fenced by its token. Infrastructure failures (pod evicted, node
  lost) go back to ready without spending an attempt, at most ARGV[5] times per node; other
  failures retry after backoff (fixed or exponential, capped by maxDelay, jittered) while
  attempts remain, then settle by the node's onFailure policy (see _attempt-failure).

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV[1] node   ARGV[2] token   ARGV[3] error text
  ARGV[4] "1" infrastructure failure / "0" failure of the node's own code
  ARGV[5] infrastructure retries allowed per node
  ARGV[6] jitter share 0..1 (drawn by the engine: Lua's random is deterministic)

  Returns (JSON): {action, retry_at_ms or false, shown phase, [ {node, queue, priority, due} ],
                   namespace, the node's queue}
    action "requeued" (infrastructure, attempt not spent), "retry" (after backoff),
           "failed" (settled by onFailure), "cancelled" (the flow had ended and the failure
           was not the node's own: infrastructure, or the flow was cancelled),
           "stale" (token mismatch: nothing changed)
  Events: requeued, retry (attempt, at, due, error), failed|ignored|removed|cancelled;
  flow phase Failed or Succeeded.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib
-- @include _attempt-failure

local node, token, err = ARGV[1], ARGV[2], ARGV[3]
if not redis.call('HGET', K_META, 'phase') then return cjson.encode({'stale', false, 'Missing', {}, '', ''}) end
if redis.call('HGET', K_STATE, node) ~= 'active' or redis.call('HGET', K_TOKEN, node) ~= token then
  return cjson.encode({'stale', false, shown_phase(), {}, where(node)})
end
local now = now_ms()
local out = {}
if ARGV[4] == '1' and redis.call('HGET', K_META, 'phase') == 'Running'
    and redis.call('HINCRBY', K_REQUEUES, 'i|' .. node, 1) <= tonumber(ARGV[5]) then
  redis.call('HSET', K_ERROR, node, err)
  requeue_without_attempt(node, now, out)
  emit('requeued', node, 'error', err)
  apply_expiry()
  local ns, queue = where(node)
  return cjson.encode({'requeued', now, shown_phase(), out, ns, queue})
end
local r = attempt_failed(node, err, now, tonumber(ARGV[6]), out, ARGV[4] == '1')
apply_expiry()
local ns, queue = where(node)
return cjson.encode({r[1], r[2], shown_phase(), out, ns, queue})
