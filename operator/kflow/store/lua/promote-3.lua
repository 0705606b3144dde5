--[[
  Move delayed members of a queue whose due time has passed to its ready set (bounded per
  call), in due order; each gets a fresh FIFO sequence behind those already ready.

  Queue keys, all under tag {<namespace>/<queue>} (kflow.store.keys.QueueKeys):
  KEYS[1] delayed zset  member "<uid>|<node>|<priority>", score due ms
  KEYS[2] ready zset    member "<uid>|<node>", score priority * 2^32 + sequence
  KEYS[3] seq           per-queue FIFO sequence

  ARGV[1] max members to move in this call
  Returns (JSON): {moved, next due ms or -1 (nothing delayed left)}
  Events: none.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  local seq = redis.call('INCRBY', KEYS[3], #due) - #due
  for _, member in ipairs(due) do
    seq = seq + 1
    local cut = string.find(member, '|[^|]*$')
    local priority = tonumber(string.sub(member, cut + 1))
    redis.call('ZADD', KEYS[2], 'NX', string.format('%.0f', priority * 4294967296 + seq),
      string.sub(member, 1, cut - 1))
    redis.call('ZREM', KEYS[1], member)
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if #nxt > 0 then next_due = tonumber(nxt[2]) end
return cjson.encode({#due, next_due})
