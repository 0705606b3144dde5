--[[
  Extend the leases of attempts still held in a queue's active set (members that are gone,
  e.g. completed or released as stalled, are not re-added).

  Queue keys, all under tag {<namespace>/<queue>} (kflow.store.keys.QueueKeys):
  KEYS[1] active zset  member "<uid>|<node>|<token>", score lease deadline ms

  ARGV[1] lease ms from now   ARGV[2..] members
  Returns (JSON): number of leases extended.
  Events: none.
]]
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return cjson.encode(n)
