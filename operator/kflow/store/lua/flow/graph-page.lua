--[[
  Read one page of a flow's graph for drawing (the kflow API's folded /graph): one HSCAN step
  over the node states, with each node's queue and children. Read-only. One JSON string per
  page instead of three replies of a thousand fields each: what the API reads of a
  100,000-node flow stays a few hundred milliseconds.

  Keys: the flow group (flow/_keys.lua); uses state, spec, children.
  ARGV: cursor, count (HSCAN's)
  Returns: {next cursor ("0": done), JSON list of {node, state, queue, children?}}
    (children left out for a node without any: cjson cannot tell an empty list)
  Events: none.
]]
-- @flags no-writes
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib

local scan = redis.call('HSCAN', K_STATE, ARGV[1], 'COUNT', ARGV[2])
local flat = scan[2]
local rows = {}
for i = 1, #flat, 2 do
  local node = flat[i]
  local row = {node, flat[i + 1], queue_of(node)}
  local children = redis.call('HGET', K_CHILDREN, node)
  if children then row[4] = cjson.decode(children) end
  rows[#rows + 1] = row
end
return {scan[1], cjson.encode(rows)}
