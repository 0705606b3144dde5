--[[
  Store an active attempt's return value before it completes, fenced by its token: a stale
  attempt (older token) can never overwrite the value of a newer one.

  Keys: the flow group (flow/_keys.lua); uses state, token, result.
  ARGV[1] node   ARGV[2] token   ARGV[3] value JSON
  Returns (JSON): true (stored) or false (stale token, node not active, flow missing).
  Events: none.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence

local node, token = ARGV[1], ARGV[2]
if not holds(node, token) then
  return cjson.encode(false)
end
redis.call('HSET', K_RESULT, node, ARGV[3])
apply_expiry()
return cjson.encode(true)
