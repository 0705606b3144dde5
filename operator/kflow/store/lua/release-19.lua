--[[
  Hand back attempts a worker holds but will not finish (graceful shutdown): each node still
  active under its token goes back to ready without spending an attempt, like a stalled
  lease but without counting against maxStalled. In a flow that already ended the node is
  cancelled instead (nothing would run it again, and it did not fail).

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV[1] reason (kept in the event)   ARGV[2..] pairs: node, token

  Returns (JSON): {shown phase, namespace, [ {released, the node's queue} per pair ],
                   [ {node, queue, priority, due or 0} to queue again ]}
  Events: released (node, reason) per released pair; cancelled in an ended flow.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib
-- @include _attempt-failure
-- @include _attempt-batch

return settle_attempts(2, 2, function(_, node, now, out)
  if redis.call('HGET', K_META, 'phase') == 'Running' then
    emit('released', node, 'reason', ARGV[1])
    requeue_without_attempt(node, now, out)
  else
    attempt_failed(node, 'released: ' .. ARGV[1], now, 0, out, true)
  end
end)
