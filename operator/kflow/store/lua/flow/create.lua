--[[
  Create a flow's meta record in phase Pending, before its nodes are written in chunks.

  Keys: the flow group (flow/_keys.lua); uses meta.
  ARGV[1] namespace   ARGV[2] flow name   ARGV[3] total node count   ARGV[4] root count
  ARGV[5] ttlSecondsAfterFinished (-1: keep)   ARGV[6] number of node chunks to come
  ARGV[7] queue names, JSON list (for reconciliation)
  ARGV[8] the Flow's spec.defaults, JSON ("": none), for nodes added while it runs

  Returns (JSON): "created" (new), "resume" (a Pending flow left by an interrupted add:
  write the chunks again), "exists" (the flow is already past Pending: nothing to do).
  Events: none.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_create

return cjson.encode(create_flow(ARGV))
