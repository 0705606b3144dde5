--[[
  Cancel, a bounded number at a time, the nodes of an ended flow (Failed or Cancelled) that
  never started: the ready set (ready and delayed nodes) first, then the waiting parents
  (the pending hash, scanned with a cursor the caller carries from call to call). Each
  becomes cancelled (see cancel_node); nodes running when the flow ended are left alone and
  recorded as they end. The engine calls it until it reports done, then takes the returned
  nodes off their queues.

  Keys: the flow group (flow/_keys.lua); uses meta, ready, pending, state (and those of cancel_node in flow/_lib).
  ARGV[1] cursor over the pending hash ("0" on the first call)   ARGV[2] most nodes this call

  Returns (JSON): {[ {node, queue, rank} taken off the ready set ], next cursor, done}
    done is true once nothing is left to cancel (at once when the flow has not ended).
    (Not the flow-step envelope: a paged sweep that carries a cursor, like a scan.)
  Events: cancelled (node, reason) per node.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib

local phase = redis.call('HGET', K_META, 'phase')
if phase ~= 'Failed' and phase ~= 'Cancelled' then return cjson.encode({{}, '0', true}) end
local reason = 'not started: the flow failed'
if phase == 'Cancelled' then reason = 'not started: the flow was cancelled' end
local limit = tonumber(ARGV[2])
local unqueue = {}
for _, node in ipairs(redis.call('ZRANGE', K_READY, '0', string.format('%d', limit - 1))) do
  local spec = spec_of(node)
  unqueue[#unqueue + 1] = {node, spec[S_QUEUE], rank_of(spec)}
  cancel_node(node, reason)
end
if #unqueue >= limit then
  apply_expiry()
  return cjson.encode({unqueue, ARGV[1], false})
end
local scan = redis.call('HSCAN', K_PENDING, ARGV[1], 'COUNT', limit - #unqueue)
local found = scan[2]
for i = 1, #found, 2 do
  if redis.call('HGET', K_STATE, found[i]) == 'waiting-children' then
    cancel_node(found[i], reason)
  end
end
apply_expiry()
return cjson.encode({unqueue, scan[1], scan[1] == '0'})
