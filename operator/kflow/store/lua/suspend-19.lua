--[[
  Suspend a running flow: no new attempt starts (start-19 refuses); running ones finish.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV: none.
  Returns (JSON): the shown phase after the call ("Suspended" if it was Running).
  Events: flow suspended.
]]
-- @include _flow-keys
-- @include _flow-lib

if redis.call('HGET', K_META, 'phase') == 'Running' and redis.call('HGET', K_META, 'suspended') ~= '1' then
  redis.call('HSET', K_META, 'suspended', '1')
  emit('flow', '', 'suspended', '1')
end
return cjson.encode(shown_phase())
