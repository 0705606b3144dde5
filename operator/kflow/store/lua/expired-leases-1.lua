--[[
  List (without removing) members of a queue's active set whose lease has ended, oldest
  first, bounded. Read-only: the engine settles each on its flow (stall-19) and only then
  drops it from the queue, so a crash in between loses nothing.

  Queue keys, all under tag {<namespace>/<queue>} (kflow.store.keys.QueueKeys):
  KEYS[1] active zset  member "<uid>|<node>|<token>", score lease deadline ms

  ARGV[1] max members
  Returns (JSON): [ member ... ]
  Events: none.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
if #r == 0 then return '[]' end
return cjson.encode(r)
