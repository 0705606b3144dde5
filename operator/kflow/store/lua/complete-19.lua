--[[
  Complete an active attempt: the node becomes completed with its value, and every parent
  waiting on it has one dependency less; a parent whose last dependency settled becomes
  ready (or delayed by its start delay). Parents read the value from the result hash.
  The flow succeeds when no root is left and no other node is still to settle.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV[1] node   ARGV[2] token   ARGV[3] "1" value given / "0" use the value stored earlier
  ARGV[4] value JSON (when ARGV[3] is "1")

  Returns (JSON): {accepted, shown phase, [ {node, queue, priority, due or 0} newly ready ],
                   namespace, the node's queue}
    accepted false: stale token or duplicate completion; nothing changed.
  Events: completed (node); flow phase Succeeded.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib
-- @include _complete

local node, token = ARGV[1], ARGV[2]
local phase = redis.call('HGET', K_META, 'phase')
if not phase then return cjson.encode({false, 'Missing', {}, '', ''}) end
if redis.call('HGET', K_STATE, node) ~= 'active' or redis.call('HGET', K_TOKEN, node) ~= token then
  return cjson.encode({false, shown_phase(), {}, where(node)})
end
local now = now_ms()
local value = ARGV[4]
if ARGV[3] == '0' then value = redis.call('HGET', K_RESULT, node) or 'null' end
local out = {}
complete_checked(node, value, phase, now, out)
apply_expiry()
local ns, queue = where(node)
return cjson.encode({true, shown_phase(), out, ns, queue})
