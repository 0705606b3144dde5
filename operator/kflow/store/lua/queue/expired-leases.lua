--[[
  List (without removing) members of a queue's active set whose lease has ended, oldest
  first, bounded. Read-only: the engine settles each on its flow (flow/stall) and only then
  drops it from the queue, so a crash in between loses nothing.

  Keys: the queue group (queue/_keys.lua); uses active.
  ARGV[1] max members
  Returns (JSON): [ member "<uid>|<node>|<token>" ... ]
  Events: none.
]]
-- @flags no-writes
-- @include queue/_keys
-- @include _clock

local r = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', '(' .. now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
if #r == 0 then return '[]' end
return cjson.encode(r)
