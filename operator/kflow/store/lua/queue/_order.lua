--[[
  Include: a ready member's score from its rank (kflow.store.codec.queue_rank: priority * 2,
  +1 for FIFO) and the queue's sequence number. Lower scores are taken first: by priority,
  then LIFO members newest first, then FIFO members oldest first. Exact in a double while the
  sequence stays below 2^31 (MAX_PRIORITY keeps priority * 2^32 + 2^32 below 2^53).
]]
local function ready_score(rank, seq)
  local base = math.floor(rank / 2) * 4294967296 + 2147483648
  if rank % 2 == 0 then return string.format('%.0f', base - seq) end
  return string.format('%.0f', base + seq)
end
