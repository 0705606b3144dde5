--[[
  Add a small flow in one call: create its record, write its nodes (one chunk) and start it,
  as flow/create, flow/add-nodes (chunk 1 of 1) and flow/activate would in three calls. For
  a new flow whose graph fits one chunk; a bigger one, or an add that finds the flow already
  there (an interrupted add to resume, a flow that exists), takes the chunked path.

  Keys: the flow group (flow/_keys.lua); uses meta, state, spec, parents, children, data,
  pending, counts, ready, events: the first ten keys, all it takes (@keys-through).
  ARGV[1..8] as flow/create (ARGV[6], the number of chunks, is 1)
  ARGV[9..] the nodes, six per node as flow/add-nodes
  Returns (JSON): "Running" (added and started), or "resume" / "exists" as flow/create
  (nothing written).
  Events: flow phase Running.
]]
-- @keys-through events
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_create
-- @include flow/_add-nodes

if ARGV[6] ~= '1' then return redis.error_reply('KFLOW flow/add writes exactly one chunk') end
-- As flow/create, flow/add-nodes and flow/activate in one call, with the meta record and the
-- counts written once: the record is created Running with its one chunk written.
local created = create_flow(ARGV, true)
if created ~= 'created' then return cjson.encode(created) end
write_chunk(1, ARGV, 9, true)
emit('flow', '', 'phase', 'Running')
return cjson.encode('Running')
