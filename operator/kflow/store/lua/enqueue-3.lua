--[[
  Put nodes on a queue: ready ones in priority order then FIFO, delayed ones by due time.
  Idempotent: a member already queued keeps its place (the flow step before it, or
  reconciliation, may call this again for the same node).

  Queue keys, all under tag {<namespace>/<queue>} (kflow.store.keys.QueueKeys):
  KEYS[1] ready zset    member "<uid>|<node>", score priority * 2^32 + sequence
  KEYS[2] delayed zset  member "<uid>|<node>|<priority>", score due ms
  KEYS[3] seq           per-queue FIFO sequence (INCRBY)

  ARGV: triples: member "<uid>|<node>", priority (0..2^21-1, lower first), due ms (0: ready now)
  Returns (JSON): number of members added (new ones only).
  Events: none.
]]
local n = (#ARGV) / 3
if n == 0 then return cjson.encode(0) end
local seq = redis.call('INCRBY', KEYS[3], n) - n
local added = 0
for i = 1, #ARGV, 3 do
  seq = seq + 1
  local due = tonumber(ARGV[i + 2])
  if due > 0 then
    added = added + redis.call('ZADD', KEYS[2], 'NX', due, ARGV[i] .. '|' .. ARGV[i + 1])
  else
    added = added + redis.call('ZADD', KEYS[1], 'NX',
      string.format('%.0f', tonumber(ARGV[i + 1]) * 4294967296 + seq), ARGV[i])
  end
end
return cjson.encode(added)
