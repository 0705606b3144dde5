--[[
  Put nodes on a queue: ready ones in rank order (priority, then LIFO or FIFO; see
  queue/_order), delayed ones by due time.
  Idempotent: a member already queued keeps its place (the flow step before it, or
  reconciliation, may call this again for the same node).

  Keys: the queue group (queue/_keys.lua); uses ready, delayed, seq.
  ARGV: triples: member "<uid>|<node>", rank (kflow.store.codec.queue_rank), due ms (0: ready now)
  Returns (JSON): number of members added (new ones only).
  Events: none.
]]
-- @include queue/_keys
-- @include queue/_order

local n = (#ARGV) / 3
if n == 0 then return cjson.encode(0) end
local seq = next_seq(n)
local added = 0
for i = 1, #ARGV, 3 do
  seq = seq + 1
  local due = tonumber(ARGV[i + 2])
  if due > 0 then
    added = added + redis.call('ZADD', K_DELAYED, 'NX', due, ARGV[i] .. '|' .. ARGV[i + 1])
  else
    added = added + redis.call('ZADD', K_READY, 'NX',
      ready_score(tonumber(ARGV[i + 1]), seq), ARGV[i])
  end
end
return cjson.encode(added)
