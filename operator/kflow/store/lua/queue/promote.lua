--[[
  Move delayed members of a queue whose due time has passed to its ready set (bounded per
  call), in due order (queue/_promote).

  Keys: the queue group (queue/_keys.lua); uses delayed, ready, seq.
  ARGV[1] max members to move in this call
  Returns (JSON): {moved, next due ms or -1 (nothing delayed left)}
  Events: none.
]]
-- @include queue/_keys
-- @include queue/_order
-- @include _clock
-- @include queue/_promote

local moved = promote_due(tonumber(ARGV[1]))
local nxt = redis.call('ZRANGE', K_DELAYED, '0', '0', 'WITHSCORES')
local next_due = -1
if #nxt > 0 then next_due = tonumber(nxt[2]) end
return cjson.encode({moved, next_due})
