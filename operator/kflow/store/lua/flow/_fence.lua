--[[
  Include: the token fence. Needs flow/_keys. An attempt may change its node only while the
  node is active under that attempt's token: a stale attempt (older token, a node settled
  or restarted since, a flow gone) is refused.
]]
local function holds(node, token)
  return redis.call('HGET', K_STATE, node) == 'active' and redis.call('HGET', K_TOKEN, node) == token
end
