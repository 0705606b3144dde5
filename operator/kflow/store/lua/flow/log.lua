--[[
  Append a log line of an active attempt to the flow's bounded log stream, fenced by token.

  Keys: the flow group (flow/_keys.lua); uses state, token, attempt, logs.
  ARGV[1] node   ARGV[2] token   ARGV[3] message   ARGV[4] stream cap (approximate MAXLEN)
  Returns (JSON): true (appended) or false (stale token / node not active).
  Events: none (the line goes to the log stream, fields node, attempt, msg).
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence

local node, token = ARGV[1], ARGV[2]
if not holds(node, token) then
  return cjson.encode(false)
end
redis.call('XADD', K_LOGS, 'MAXLEN', '~', ARGV[4], '*', 'node', node,
  'attempt', redis.call('HGET', K_ATTEMPT, node) or '0', 'msg', ARGV[3])
apply_expiry()
return cjson.encode(true)
