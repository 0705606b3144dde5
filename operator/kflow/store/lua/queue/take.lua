--[[
  Promote the queue's due delayed members first (queue/_promote, at most ARGV[3] of them),
  then take up to ARGV[1] ready members of a queue, lowest score first (queue/_order: priority,
  then LIFO or FIFO), within the queue's concurrency (size of the active set) and rate limit (a sliding window
  on the server clock), and hold each in the active set under its token until its lease
  ends. The engine then starts each attempt on its flow (flow/start).

  Keys: the queue group (queue/_keys.lua); uses ready, active, delayed, seq, config, rate,
  takes.
  ARGV[1] max members   ARGV[2] lease ms   ARGV[3] max members to promote
  ARGV[4..] one token per possible member
  Returns (JSON): {[ {member, token} ... ], ms until the rate limit frees a slot or 0,
                   true when the queue has a rate limit}
  Events: none on flows; one entry in the queue's takes stream per call that took something.
]]
-- @include queue/_keys
-- @include queue/_order
-- @include _clock
-- @include queue/_promote

local now = now_ms()
promote_due(tonumber(ARGV[3]))
local limit = math.min(tonumber(ARGV[1]), #ARGV - 3)
local cfg = redis.call('HMGET', K_CONFIG, 'concurrency', 'rate_max', 'rate_per_ms')
if cfg[1] then limit = math.min(limit, tonumber(cfg[1]) - redis.call('ZCARD', K_ACTIVE)) end
local rate_wait = 0
if cfg[2] and cfg[3] then
  redis.call('ZREMRANGEBYSCORE', K_RATE, '-inf', ms_text(now - tonumber(cfg[3])))
  local room = tonumber(cfg[2]) - redis.call('ZCARD', K_RATE)
  if room <= limit then
    local oldest = redis.call('ZRANGE', K_RATE, '0', '0', 'WITHSCORES')
    if #oldest > 0 then rate_wait = math.max(1, tonumber(oldest[2]) + tonumber(cfg[3]) - now) end
    limit = room
  end
end
local taken = {}
if limit > 0 then
  local popped = redis.call('ZPOPMIN', K_READY, string.format('%d', limit))
  -- The holds go in one ZADD per set, whatever the number taken (sliced for unpack()).
  -- Scores as text: Redis would format each Lua number with "%.17g" (_clock, ms_text).
  local deadline = ms_text(now + tonumber(ARGV[2]))
  local limited = cfg[2] and cfg[3]
  local held, counted = {}, {}
  for i = 1, #popped, 2 do
    local token = ARGV[3 + (i + 1) / 2]
    local member = popped[i] .. '|' .. token
    held[#held + 1] = deadline
    held[#held + 1] = member
    if limited then
      counted[#counted + 1] = now_text()
      counted[#counted + 1] = member
    end
    taken[#taken + 1] = {popped[i], token}
  end
  for i = 1, #held, 1000 do
    redis.call('ZADD', K_ACTIVE, unpack(held, i, math.min(i + 999, #held)))
    if limited then
      redis.call('ZADD', K_RATE, unpack(counted, i, math.min(i + 999, #counted)))
    end
  end
end
if #taken > 0 then
  redis.call('XADD', K_TAKES, 'MAXLEN', '~', '10000', '*', 'n', string.format('%d', #taken),
             'at', now_text())
end
return cjson.encode({taken, rate_wait, (cfg[2] and cfg[3]) and true or false})
