--[[
  Include: a ready member's score from its rank (kflow.store.codec.queue_rank: priority * 2,
  +1 for FIFO) and the queue's sequence number. Lower scores are taken first: by priority,
  then LIFO members newest first, then FIFO members oldest first. Exact, and LIFO members
  kept inside their priority's band, while the sequence stays below 2^31: so the sequence
  starts again from 0 whenever the ready set is empty (as BullMQ resets its priority counter),
  and only a queue whose ready set never empties for 2^31 enqueues could misplace a LIFO node.
]]
local function ready_score(rank, seq)
  local base = math.floor(rank / 2) * 4294967296 + 2147483648
  if rank % 2 == 0 then return string.format('%.0f', base - seq) end
  return string.format('%.0f', base + seq)
end

-- The sequence numbers for `n` new ready members (the first is the returned value + 1).
local function next_seq(n)
  if redis.call('ZCARD', K_READY) == 0 then
    redis.call('SET', K_SEQ, string.format('%d', n))
    return 0
  end
  return redis.call('INCRBY', K_SEQ, string.format('%d', n)) - n
end
