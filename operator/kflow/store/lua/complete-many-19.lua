--[[
  Complete several active attempts of one flow in one call (a worker's batch): each as
  complete-19 with a given value, so a fan-out's children cost one round trip per batch
  instead of one each. An attempt whose token is stale or whose node already completed is
  refused on its own; the others still complete.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV triples: node, token, value JSON

  Returns (JSON): {shown phase, namespace, [ {accepted, the node's queue} per triple ],
                   [ {node, queue, priority, due or 0} newly ready ]}
  Events: completed (node) per accepted triple; flow phase Succeeded.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib
-- @include _complete
-- @include _attempt-batch

return settle_attempts(1, 3, function(i, node, now, out)
  complete_checked(node, ARGV[i + 2], redis.call('HGET', K_META, 'phase'), now, out)
end)
