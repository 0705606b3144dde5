--[[
  Include: complete one active node whose token the caller checked. Needs flow/_keys, _clock,
  flow/_lib and flow/_attempt-failure. The node becomes completed with `value`; every parent waiting on it has one
  dependency less (a parent whose last dependency settled goes into `out`); the flow
  succeeds when no root is left and every other node has settled too.
]]
--[[
  A node whose attempt added children to itself (flow/add-children.lua) does not complete:
  it waits for them and then runs again, its value being what that later run returns (the
  adding run's return value is dropped, as BullMQ's moveToWaitingChildren drops it). An added
  child that already failed under failParent fails it. Returns the outcome, or nil when the
  node added no children to itself in this run. `recorded`: its record of added children
  when the caller read it already (false: none).
]]
local function wait_for_added(node, now, out, recorded)
  local raw = recorded
  if raw == nil then raw = redis.call('HGET', K_REQUEUES, 'a|' .. node) end
  if not raw then return nil end
  local added = cjson.decode(raw)
  if added.p ~= '' then return nil end
  redis.call('HDEL', K_REQUEUES, 'a|' .. node)  -- its next run may add children again
  redis.call('HDEL', K_TOKEN, node)
  redis.call('HDEL', K_RESULT, node)
  redis.call('HDEL', K_PROGRESS, node)  -- its next run has this run's attempt number
  redis.call('HINCRBY', K_ATTEMPT, node, '-1')  -- running again after its children is no retry
  local pending = 0
  for _, c in ipairs(list_of(K_CHILDREN, node)) do
    local st = redis.call('HGET', K_STATE, c)
    if st == 'failed' and spec_of(c)[S_ONFAIL] == 'P' then
      redis.call('HINCRBY', K_ATTEMPT, node, '1')
      local err = 'child "' .. c .. '" failed: ' .. (redis.call('HGET', K_ERROR, c) or '')
      if settle_failure(node, err, now, out) then finish_flow('Failed', now) end
      return 'failed'
    end
    if not SETTLED[st] then pending = pending + 1 end
  end
  set_state(node, 'active', 'waiting-children')
  redis.call('HSET', K_PENDING, node, pending)
  emit('waiting', node, 'children', pending)
  if pending == 0 then unlock(node, now, out) end
  return 'waiting'
end

--[[
  A batch of completions (flow/complete.lua) settles each parent once at its end, by the
  number of its children the batch completed: a fan-out's 100 completions read and count
  down their parent once, not 100 times. Deferring is safe within the batch: a parent whose
  count reaches 0 has no child left unsettled, so nothing later in the batch concerns it as
  a parent, and unlocking it settles nothing (the flow's success does not wait on it).
  One parent changes state inside a batch in a way that matters: a node that completes its
  run adding children while some of them completed earlier in the batch. Those completed
  while it was active, which counts for nothing (its waiting count leaves out the children
  already settled), so its count in the batch starts again from 0 (complete_checked).
]]
--[[
  A batch also reads what each completion needs (its token, its record of added children,
  its parents, its times) in one HMGET per hash before its loop (read_batch), and writes the
  values and removes the tokens in one command each after it (write_batch; the times go
  with flush_times). Nothing in the batch reads a value or a token but through the batch:
  its fence is `batch.tokens`, which drops a node as it leaves active, so a node named
  twice completes once.
]]
local function new_batch()
  return {order = {}, count = {}, results = {}, unheld = {}}
end

-- The nodes of ARGV's groups of `width` from `first` on.
local function read_batch(batch, first, width)
  local nodes, added = {}, {}
  for i = first, #ARGV, width do
    nodes[#nodes + 1] = ARGV[i]
    added[#added + 1] = 'a|' .. ARGV[i]
  end
  batch.tokens = hmget_map(K_TOKEN, nodes)
  batch.added = hmget_map(K_REQUEUES, added)
  batch.parents = hmget_map(K_PARENTS, nodes)
  load_times(nodes)
end

local function write_batch(batch, now, out)
  for _, p in ipairs(batch.order) do
    local n = batch.count[p]
    if n > 0 then child_settled(p, now, out, n) end
  end
  call_sliced('HSET', K_RESULT, batch.results)
  call_sliced('HDEL', K_TOKEN, batch.unheld)
end

-- `batch` (optional, new_batch and read_batch): complete as part of a batch, whose
-- write_batch settles the parents and writes the values; without it, at once.
local function complete_checked(node, value, phase, now, out, batch)
  local waiting
  if batch then
    batch.tokens[node] = nil  -- it leaves active whatever comes next
    waiting = wait_for_added(node, now, out, batch.added['a|' .. node])
  else
    waiting = wait_for_added(node, now, out)
  end
  if waiting then
    if batch and batch.count[node] then batch.count[node] = 0 end
    return waiting
  end
  local parents
  if batch then
    local results = batch.results
    results[#results + 1] = node
    results[#results + 1] = value
    batch.unheld[#batch.unheld + 1] = node
    local listed = batch.parents[node]  -- a fan-out's leaves: one decode for the batch
    parents = listed and decode_shared(listed) or {}
  else
    redis.call('HSET', K_RESULT, node, value)
    redis.call('HDEL', K_TOKEN, node)
    parents = parents_of(node)
  end
  set_state(node, 'active', 'completed')
  emit('completed', node)
  for _, p in ipairs(parents) do
    if not batch then
      child_settled(p, now, out)
    elseif batch.count[p] then
      batch.count[p] = batch.count[p] + 1
    else
      batch.order[#batch.order + 1] = p
      batch.count[p] = 1
    end
  end
  if #parents == 0 then root_done() end
  if phase == 'Running' then maybe_succeed(now) end
  return 'completed'
end

--[[
  An attempt that stored its result (flow/store-result) has returned: its side effects are
  committed. When such an attempt is then reported failed, lost or stalled (its pod died
  between storing and exiting, its Job vanished before the operator read it), it completes
  with that value instead of running again. No attempt starts with a result stored: start.lua
  clears what the attempt before left when the attempt number grows, and every step that
  gives the next attempt the same number clears it itself (requeue_without_attempt,
  wait_for_added, retry-failed.lua). So a stored value always belongs to the attempt the
  caller's token fenced. True if completed.
]]
local function complete_stored(node, now, out)
  local stored = redis.call('HGET', K_RESULT, node)
  if not stored then return false end
  complete_checked(node, stored, flow_phase(), now, out)
  return true
end
