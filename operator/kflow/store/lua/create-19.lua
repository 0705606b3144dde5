--[[
  Create a flow's meta record in phase Pending, before its nodes are written in chunks.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV[1] namespace   ARGV[2] flow name   ARGV[3] total node count   ARGV[4] root count
  ARGV[5] ttlSecondsAfterFinished (-1: keep)   ARGV[6] number of node chunks to come
  ARGV[7] queue names, JSON list (for reconciliation)

  Returns (JSON): "created" (new), "resume" (a Pending flow left by an interrupted add:
  write the chunks again), "exists" (the flow is already past Pending: nothing to do).
  Events: none.
]]
-- @include _flow-keys

local phase = redis.call('HGET', K_META, 'phase')
if phase == 'Pending' then return cjson.encode('resume') end
if phase then return cjson.encode('exists') end
local t = redis.call('TIME')
redis.call('HSET', K_META, 'namespace', ARGV[1], 'name', ARGV[2], 'phase', 'Pending',
  'total', ARGV[3], 'roots_left', ARGV[4], 'ttl', ARGV[5], 'chunks', ARGV[6], 'written', 0,
  'queues', ARGV[7], 'created_at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return cjson.encode('created')
