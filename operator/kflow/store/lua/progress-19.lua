--[[
  Record an active attempt's progress, fenced by its token.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV[1] node   ARGV[2] token   ARGV[3] progress JSON
  Returns (JSON): true (recorded) or false (stale token / node not active).
  Events: none (progress is polled, it changes too often for the stream).
]]
-- @include _flow-keys
-- @include _flow-lib

local node, token = ARGV[1], ARGV[2]
if redis.call('HGET', K_STATE, node) ~= 'active' or redis.call('HGET', K_TOKEN, node) ~= token then
  return cjson.encode(false)
end
redis.call('HSET', K_PROGRESS, node, ARGV[3])
apply_expiry()
return cjson.encode(true)
