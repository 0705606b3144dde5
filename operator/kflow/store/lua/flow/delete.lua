--[[
  Delete every key of a flow (the Flow object is gone). Its leftover queue entries are
  dropped lazily: flow/start refuses nodes of a missing flow.

  Keys: the flow group (flow/_keys.lua); uses every key.
  ARGV: none.
  Returns (JSON): number of keys removed.
  Events: none (the stream goes too).
]]
-- @flags allow-oom

return cjson.encode(redis.call('UNLINK', unpack(KEYS)))
