--[[
  Handle one expired queue lease: if the node is still active under that token, its
  attempt stalled (worker or pod vanished): back to ready without spending an attempt, up
  to ARGV[3] times per node, then the attempt fails as "stalled" (retry/onFailure apply).
  If the token no longer matches, the lease was left over (a crash between a flow step and
  a queue step): nothing changes here, and a node still ready is reported for re-queueing.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV[1] node   ARGV[2] token   ARGV[3] max stalls per node   ARGV[4] jitter share 0..1

  Returns (JSON): {action, shown phase, [ {node, queue, priority, due or 0} to (re)queue ]}
    action "requeued" | "retry" | "failed" | "cancelled" (the flow had ended) | "gone"
    (lease was stale)
  Events: stalled; then as fail-19.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib
-- @include _attempt-failure

local node, token = ARGV[1], ARGV[2]
if not redis.call('HGET', K_META, 'phase') then return cjson.encode({'gone', 'Missing', {}}) end
local st = redis.call('HGET', K_STATE, node)
local now = now_ms()
local out = {}
if st ~= 'active' or redis.call('HGET', K_TOKEN, node) ~= token then
  if st == 'ready' or st == 'delayed' then
    local spec = spec_of(node)
    local due = 0
    if st == 'delayed' then due = tonumber(redis.call('ZSCORE', K_READY, node) or '0') end
    out[1] = {node, spec[S_QUEUE], spec[S_PRIORITY], due}
  end
  return cjson.encode({'gone', shown_phase(), out})
end
emit('stalled', node)
local stalls = redis.call('HINCRBY', K_REQUEUES, 's|' .. node, 1)
if stalls <= tonumber(ARGV[3]) and redis.call('HGET', K_META, 'phase') == 'Running' then
  requeue_without_attempt(node, now, out)
  apply_expiry()
  return cjson.encode({'requeued', shown_phase(), out})
end
local r = attempt_failed(node, 'stalled: the attempt lost its lease ' .. stalls .. ' times',
  now, tonumber(ARGV[4]), out, true)
apply_expiry()
return cjson.encode({r[1], shown_phase(), out})
