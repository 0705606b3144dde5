--[[
  Put nodes on a queue: ready ones in rank order (priority, then LIFO or FIFO; see
  queue/_order), delayed ones by due time.
  Idempotent: a member already queued keeps its place (the flow step before it, or
  reconciliation, may call this again for the same node).

  First frees the queue's hold on the attempts a flow step settled (their active-set
  members), so the queue step after a flow step is one call per queue; in the same call it
  holds the attempts those steps started by handing over (flow/complete.lua), each until
  its lease ends, as a take would have. Freeing a completed attempt's lease and holding the
  one its completion handed over happen together or not at all: a lease left over from a
  completion means the node it handed over is held by nothing (flow/stall.lua).

  Keys: the queue group (queue/_keys.lua); uses ready, delayed, seq, active.
  ARGV[1] how many active members to free, then those members "<uid>|<node>|<token>"
  then how many members to hold, the lease ms, those members "<uid>|<node>|<token>"
  then triples: member "<uid>|<node>", rank (kflow.store.codec.queue_rank), due ms (0: ready now)
  Returns (JSON): number of members added (new ones only).
  Events: none.
]]
-- @include queue/_keys
-- @include queue/_order
-- @include _clock

local free = tonumber(ARGV[1])
for i = 2, free + 1, 1000 do  -- unpack() is bounded: free in slices
  redis.call('ZREM', K_ACTIVE, unpack(ARGV, i, math.min(i + 999, free + 1)))
end
local held = tonumber(ARGV[free + 2])
if held > 0 then
  local deadline = ms_text(now_ms() + tonumber(ARGV[free + 3]))
  local holding = {}
  for i = free + 4, free + 3 + held do
    holding[#holding + 1] = deadline
    holding[#holding + 1] = ARGV[i]
  end
  for i = 1, #holding, 1000 do
    redis.call('ZADD', K_ACTIVE, unpack(holding, i, math.min(i + 999, #holding)))
  end
end
local first = free + 4 + held
local n = (#ARGV - first + 1) / 3
if n == 0 then return cjson.encode(0) end
local seq = next_seq(n)
local added = 0
for i = first, #ARGV, 3 do
  seq = seq + 1
  local due = tonumber(ARGV[i + 2])
  if due > 0 then
    added = added + redis.call('ZADD', K_DELAYED, 'NX', ARGV[i + 2], ARGV[i] .. '|' .. ARGV[i + 1])
  else
    added = added + redis.call('ZADD', K_READY, 'NX',
      ready_score(tonumber(ARGV[i + 1]), seq), ARGV[i])
  end
end
return cjson.encode(added)
