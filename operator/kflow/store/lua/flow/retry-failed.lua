--[[
  Retry a Failed flow: every node that failed on its own attempts becomes ready with fresh
  attempts (a root that ended ignored or removed counts as failed); every node failed by
  propagation or cancelled by the end of the flow goes back to waiting-children with its
  pending count recomputed (ready at once, start delay honoured, if nothing is pending).
  The flow is Running again and loses its expiry; the engine then re-queues the flow's
  ready set.

  Keys: the flow group (flow/_keys.lua); uses meta, state, parents, children, attempt, result,
  progress, error, failed, requeues, pending, failures (and every key, to drop the expiry).
  ARGV: none.
  Returns (JSON): the flow-step envelope (flow/_reply) with one row {retried}: false when
    the flow is not Failed; queued holds the nodes made ready (or delayed).
  Events: flow phase Running (retry).
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply

if redis.call('HGET', K_META, 'phase') ~= 'Failed' then return step_reply({false}, {}) end
local now = now_ms()
-- Nodes in state failed are retried; so are roots that ended ignored or removed (they failed
-- the flow, and no parent moved on without them). Other ignored/removed nodes stay settled.
local own, propagated, states = {}, {}, {}
local f = redis.call('HGETALL', K_FAILED)
for i = 1, #f, 2 do
  local node = f[i]
  local st = redis.call('HGET', K_STATE, node)
  if st == 'failed' or st == 'cancelled' or ((st == 'ignored' or st == 'removed')
      and redis.call('HEXISTS', K_PARENTS, node) == 0) then
    states[node] = st
    if f[i + 1] == 'o' then own[#own + 1] = node else propagated[#propagated + 1] = node end
  end
end
local out = {}
local settled = {completed = true, ignored = true, removed = true}
-- A map node waits again for the items it added that have not settled (they are retried
-- too: own failures are ready by now, cancelled items are brought back below), or expands
-- again when it had not added them all (or failed reading its list).
local function retry_map(node, old)
  local record = map_record(node)
  local pending = 0
  if record then
    for k = 0, record.added - 1 do
      if not settled[redis.call('HGET', K_STATE, node .. '[' .. k .. ']')] then
        pending = pending + 1
      end
    end
  end
  if record and record.added >= record.items then
    set_state(node, old, 'waiting-children')
    redis.call('HSET', K_PENDING, node, pending)
    if pending == 0 then unlock(node, now, out) end
  else
    redis.call('HSET', K_PENDING, node, pending)
    begin_map(node, old, now)
  end
end
-- A node that runs again starts at attempt 1: what its last attempt left (a stored result,
-- its progress) goes now, as flow/start.lua does not clear it for a first attempt. A map
-- node's progress is its item record, which it keeps.
local function forget_attempts(node, spec)
  redis.call('HDEL', K_ATTEMPT, node)
  redis.call('HDEL', K_RESULT, node)
  if not map_source(spec) then redis.call('HDEL', K_PROGRESS, node) end
end
for _, node in ipairs(own) do
  local spec = spec_of(node)
  forget_attempts(node, spec)
  redis.call('HDEL', K_ERROR, node)
  redis.call('HDEL', K_FAILED, node)
  redis.call('HDEL', K_REQUEUES, 'i|' .. node, 's|' .. node)
  if condition_to_judge(node, spec) then
    begin_decide(node, states[node], now)  -- its condition failed to evaluate: judge again
  elseif map_source(spec) then
    retry_map(node, states[node])
  else
    schedule(node, states[node], 0, now, out)
  end
end
-- Own failures are ready now, so they count as pending for the propagated parents.
for _, node in ipairs(propagated) do
  redis.call('HDEL', K_ERROR, node)
  redis.call('HDEL', K_FAILED, node)
  -- A cancelled node starts over: attempts it had count for nothing now.
  forget_attempts(node, spec_of(node))
  redis.call('HDEL', K_REQUEUES, 'i|' .. node, 's|' .. node)
  local pending = 0
  for _, c in ipairs(list_of(K_CHILDREN, node)) do
    if not settled[redis.call('HGET', K_STATE, c)] then pending = pending + 1 end
  end
  if pending == 0 and map_source(spec_of(node)) and map_record(node) then
    retry_map(node, states[node])
  else
    set_state(node, states[node], 'waiting-children')
    redis.call('HSET', K_PENDING, node, pending)
    if pending == 0 then unlock(node, now, out) end
  end
end
redis.call('HSET', K_META, 'phase', 'Running')
note_meta('phase', 'Running')
redis.call('HDEL', K_META, 'finished_at', 'expire_at')
note_meta('expire_at', false)
redis.call('DEL', K_FAILURES)
for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
emit('flow', '', 'phase', 'Running', 'retry', #out)
return step_reply({true}, out)
