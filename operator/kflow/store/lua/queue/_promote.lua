--[[
  Include: move delayed members of a queue whose due time has passed to its ready set
  (at most `max` per call), in due order; each gets a fresh FIFO sequence behind those already
  ready. Needs queue/_keys, queue/_order and _clock. Returns how many moved.
]]
local function promote_due(max)
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now_text(), 'LIMIT', '0',
                        string.format('%d', max))
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
  return #due
end
