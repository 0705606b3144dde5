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
-- @include flow/_activate

return cjson.encode(activate_flow())
