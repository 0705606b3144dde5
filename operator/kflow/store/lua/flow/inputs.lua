--[[
  Read the inputs of several nodes of one flow in one call (a worker's batch): for each,
  the values of its completed children, the errors of its children that failed under
  onFailure=ignore, and the errors of its children that failed for good (a parent runs with
  such a child only when continueParent released it). Read-only.

  Keys: the flow group (flow/_keys.lua); uses state, children, result, error.
  ARGV: nodes
  Returns (JSON): [ inputs per node (flow/_inputs) ]
  Events: none.
]]
-- @flags no-writes
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_inputs

local res = {}
for i = 1, #ARGV do res[i] = inputs_of(ARGV[i]) end
return cjson.encode(res)
