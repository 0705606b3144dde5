--[[
  Forget a deleted Queue: its settings and its rate and take records go. Nodes still on it
  (ready, running or delayed: their flows wait for a Queue of that name) keep their entries
  and the FIFO sequence, so a Queue made again with that name serves them in the same order;
  with none left, nothing of the queue stays in Redis.

  Keys: the queue group (queue/_keys.lua); uses ready, active, delayed, config, rate, seq,
    takes.
  ARGV: none.
  Returns (JSON): the number of members still on the queue.
  Events: none.
]]
-- @flags allow-oom
-- @include queue/_keys

local left = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_ACTIVE)
  + redis.call('ZCARD', K_DELAYED)
redis.call('DEL', K_CONFIG, K_RATE, K_TAKES)
if left == 0 then redis.call('DEL', K_SEQ) end
return cjson.encode(left)
