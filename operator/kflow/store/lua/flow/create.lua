--[[
  Create a flow's meta record in phase Pending, before its nodes are written in chunks.

  Keys: the flow group (flow/_keys.lua); uses meta.
  ARGV[1] namespace   ARGV[2] flow name   ARGV[3] total node count   ARGV[4] root count
  ARGV[5] ttlSecondsAfterFinished (-1: keep)   ARGV[6] number of node chunks to come
  ARGV[7] queue names, JSON list (for reconciliation)
  ARGV[8] the Flow's spec.defaults, JSON ("": none), for nodes added while it runs

  Returns (JSON): "created" (new), "resume" (a Pending flow left by an interrupted add:
  write the chunks again), "exists" (the flow is already past Pending: nothing to do).
  Events: none.
]]
-- @include flow/_keys
-- @include _clock

local phase = redis.call('HGET', K_META, 'phase')
if phase == 'Pending' then return cjson.encode('resume') end
if phase then return cjson.encode('exists') end
redis.call('HSET', K_META, 'namespace', ARGV[1], 'name', ARGV[2], 'phase', 'Pending',
  'total', ARGV[3], 'roots_left', ARGV[4], 'ttl', ARGV[5], 'chunks', ARGV[6], 'written', 0,
  'queues', ARGV[7], 'created_at', now_ms())
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', K_META, 'defaults', ARGV[8]) end
return cjson.encode('created')
