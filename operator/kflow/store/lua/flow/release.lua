--[[
  Hand back attempts a worker holds but will not finish (graceful shutdown): each node still
  active under its token goes back to ready without spending an attempt, like a stalled
  lease but without counting against maxStalled. In a flow that already ended the node is
  cancelled instead (nothing would run it again, and it did not fail).

  Keys: the flow group (flow/_keys.lua); uses meta (and those of flow/_attempt-failure).
  ARGV[1] reason (kept in the event)   ARGV[2..] pairs: node, token

  Returns (JSON): the flow-step envelope (flow/_reply) with rows as flow/_attempt-batch:
    {accepted, the node's queue, "released" | "cancelled" | "stale", false} per pair
  Events: released (node, reason) per released pair; cancelled in an ended flow.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence
-- @include flow/_reply
-- @include flow/_attempt-failure
-- @include flow/_attempt-batch

return settle_attempts(2, 2, function(_, node, now, out)
  if redis.call('HGET', K_META, 'phase') == 'Running' then
    emit('released', node, 'reason', ARGV[1])
    requeue_without_attempt(node, now, out)
    return 'released'
  end
  return attempt_failed(node, 'released: ' .. ARGV[1], now, 0, out, true)[1]
end)
