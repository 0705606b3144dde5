--[[
  Extend the leases of attempts still held in a queue's active set (members that are gone,
  e.g. completed or released as stalled, are not re-added).

  Keys: the queue group (queue/_keys.lua); uses active.
  ARGV[1] lease ms from now   ARGV[2..] members "<uid>|<node>|<token>"
  Returns (JSON): number of leases extended.
  Events: none.
]]
-- @include queue/_keys
-- @include _clock

local deadline = ms_text(now_ms() + tonumber(ARGV[1]))
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', K_ACTIVE, 'XX', 'CH', deadline, ARGV[i])
end
return cjson.encode(n)
