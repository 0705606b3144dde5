--[[
  Move delayed members of a queue whose due time has passed to its ready set (bounded per
  call), in due order; each gets a fresh FIFO sequence behind those already ready.

  Keys: the queue group (queue/_keys.lua); uses delayed, ready, seq.
  ARGV[1] max members to move in this call
  Returns (JSON): {moved, next due ms or -1 (nothing delayed left)}
  Events: none.
]]
-- @include queue/_keys
-- @include queue/_order
-- @include _clock

local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  local seq = next_seq(#due)
  for _, member in ipairs(due) do
    seq = seq + 1
    local cut = string.find(member, '|[^|]*$')
    local rank = tonumber(string.sub(member, cut + 1))
    redis.call('ZADD', K_READY, 'NX', ready_score(rank, seq), string.sub(member, 1, cut - 1))
    redis.call('ZREM', K_DELAYED, member)
  end
end
local nxt = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
local next_due = -1
if #nxt > 0 then next_due = tonumber(nxt[2]) end
return cjson.encode({#due, next_due})
