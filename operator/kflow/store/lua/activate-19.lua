--[[
  Start a fully written flow: phase Pending -> Running. O(1): the leaves are already on
  the flow's ready set; the engine then puts them on their queues (reconciliation).

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV: none.
  Returns (JSON): the phase after the call ("Running", or the phase it already had);
  "incomplete" when not every chunk is written yet.
  Events: flow phase Running.
]]
-- @include _flow-keys
-- @include _now
-- @include _flow-lib

local m = redis.call('HMGET', K_META, 'phase', 'written', 'chunks')
if not m[1] then return cjson.encode('Missing') end
if m[1] ~= 'Pending' then return cjson.encode(m[1]) end
if tonumber(m[2]) < tonumber(m[3]) then return cjson.encode('incomplete') end
redis.call('HSET', K_META, 'phase', 'Running', 'started_at', now_ms())
emit('flow', '', 'phase', 'Running')
return cjson.encode('Running')
