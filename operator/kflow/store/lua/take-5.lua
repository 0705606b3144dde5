--[[
  Take up to ARGV[1] ready members of a queue, lowest score first (priority, then FIFO),
  within the queue's concurrency (size of the active set) and rate limit (a sliding window
  on the server clock), and hold each in the active set under its token until its lease
  ends. The engine then starts each attempt on its flow (start-19).

  Queue keys, all under tag {<namespace>/<queue>} (kflow.store.keys.QueueKeys):
  KEYS[1] ready zset   member "<uid>|<node>", score priority * 2^32 + sequence
  KEYS[2] active zset  member "<uid>|<node>|<token>", score lease deadline ms
  KEYS[3] config hash  concurrency, rate_max, rate_per_ms
  KEYS[4] rate zset    one member per take in the window, score take time ms
  KEYS[5] takes stream one entry per call that took something: fields n (how many) and at
                       (the take time the rate window uses, ms; the entry id may be a ms
                       later); bounded (MAXLEN ~ 10000). The record of starts the rate limit
                       is judged against, and a source for start-rate metrics.

  ARGV[1] max members   ARGV[2] lease ms   ARGV[3..] one token per possible member
  Returns (JSON): {[ {member, token} ... ], ms until the rate limit frees a slot or 0}
  Events: none on flows; the queue's takes stream (KEYS[5]).
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = math.min(tonumber(ARGV[1]), #ARGV - 2)
local cfg = redis.call('HMGET', KEYS[3], 'concurrency', 'rate_max', 'rate_per_ms')
if cfg[1] then limit = math.min(limit, tonumber(cfg[1]) - redis.call('ZCARD', KEYS[2])) end
local rate_wait = 0
if cfg[2] and cfg[3] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(cfg[3]))
  local room = tonumber(cfg[2]) - redis.call('ZCARD', KEYS[4])
  if room <= limit then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if #oldest > 0 then rate_wait = math.max(1, tonumber(oldest[2]) + tonumber(cfg[3]) - now) end
    limit = room
  end
end
local taken = {}
if limit > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], limit)
  for i = 1, #popped, 2 do
    local token = ARGV[2 + (i + 1) / 2]
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), popped[i] .. '|' .. token)
    if cfg[2] and cfg[3] then redis.call('ZADD', KEYS[4], now, popped[i] .. '|' .. token) end
    taken[#taken + 1] = {popped[i], token}
  end
end
if #taken > 0 then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'n', #taken, 'at', now)
end
return cjson.encode({taken, rate_wait})
