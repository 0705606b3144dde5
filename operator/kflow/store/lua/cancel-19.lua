--[[
  Cancel a flow that has not finished: phase Cancelled, nothing new starts. Running attempts
  are returned so the caller can stop them; if they still report, their outcome is recorded.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV: none.
  Returns (JSON): {shown phase, [ {node, token} of active attempts ]}
  Events: flow phase Cancelled.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib

local phase = redis.call('HGET', K_META, 'phase')
if phase == 'Pending' or phase == 'Running' then
  redis.call('HDEL', K_META, 'suspended')
  finish_flow('Cancelled', now_ms())
  apply_expiry()
end
local active = {}
local t = redis.call('HGETALL', K_TOKEN)
for i = 1, #t, 2 do active[#active + 1] = {t[i], t[i + 1]} end
return cjson.encode({shown_phase(), active})
