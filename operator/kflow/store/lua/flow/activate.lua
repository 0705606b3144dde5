--[[
  Start a fully written flow: phase Pending -> Running. O(1): the leaves are already on
  the flow's ready set; the engine then puts them on their queues (reconciliation).

  Keys: the flow group (flow/_keys.lua); uses meta, events.
  ARGV: none.
  Returns (JSON): the phase after the call ("Running", or the phase it already had);
  "incomplete" when not every chunk is written yet.
  Events: flow phase Running.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib

local m = redis.call('HMGET', K_META, 'phase', 'written', 'chunks')
if not m[1] then return cjson.encode('Missing') end
if m[1] ~= 'Pending' then return cjson.encode(m[1]) end
if tonumber(m[2]) < tonumber(m[3]) then return cjson.encode('incomplete') end
redis.call('HSET', K_META, 'phase', 'Running', 'started_at', now_ms())
emit('flow', '', 'phase', 'Running')
return cjson.encode('Running')
