--[[
  Include: the token fence. Needs flow/_keys. An attempt may change its node only while the
  node is active under that attempt's token: a stale attempt (older token, a node settled
  or restarted since, a flow gone) is refused.

  A node holds a token only while it is active: flow/start.lua writes it as the node becomes
  active, and every step that moves a node out of active deletes it (completion, waiting for
  added children, failure, retry, requeue, cancel). cancel.lua lists the running attempts by
  the same rule. So the token alone says that the node is active under this attempt.
]]
local function holds(node, token)
  return redis.call('HGET', K_TOKEN, node) == token
end
