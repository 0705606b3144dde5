--[[
  Record an active attempt's progress, fenced by its token.

  Keys: the flow group (flow/_keys.lua); uses state, token, progress.
  ARGV[1] node   ARGV[2] token   ARGV[3] progress JSON
  Returns (JSON): true (recorded) or false (stale token / node not active).
  Events: none (progress is polled, it changes too often for the stream).
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence

local node, token = ARGV[1], ARGV[2]
if not holds(node, token) then
  return cjson.encode(false)
end
redis.call('HSET', K_PROGRESS, node, ARGV[3])
apply_expiry()
return cjson.encode(true)
