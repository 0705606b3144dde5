--[[
  Include: what happens when an attempt of an active node ends without a result.
  Needs flow/_keys, _clock and flow/_lib.
]]

-- Back to ready without spending an attempt (infrastructure loss, stalled lease).
-- The next attempt has this one's number, so what this one left goes now (flow/start.lua
-- clears it only when the number grows).
local function requeue_without_attempt(node, now, out)
  redis.call('HINCRBY', K_ATTEMPT, node, '-1')
  redis.call('HDEL', K_TOKEN, node)
  redis.call('HDEL', K_RESULT, node)
  redis.call('HDEL', K_PROGRESS, node)
  schedule(node, 'active', 0, now, out)
end

local function backoff_ms(spec, attempt, share)
  local d = spec[S_DELAY]
  if spec[S_BACKOFF] == 'e' then d = d * 2 ^ (attempt - 1) end
  if spec[S_MAXDELAY] >= 0 and d > spec[S_MAXDELAY] then d = spec[S_MAXDELAY] end
  if d > 2 ^ 40 then d = 2 ^ 40 end
  local j = spec[S_JITTER]
  if j > 0 then d = d * (1 - j) + d * j * share end
  return math.floor(d)
end

--[[
  `node` failed for good (own attempts exhausted): settle it by its onFailure policy, then
  settle every parent that the policy drags down, iteratively (a DAG can be 100,000 deep),
  each parent once. Returns true if a root ended failed (the flow then fails).
]]
local function settle_failure(first, first_error, now, out)
  local work = {{first, first_error, 'o'}}
  local seen = {[first] = true}
  local root_failed = false
  local i = 1
  while i <= #work do
    local node, err, how = work[i][1], work[i][2], work[i][3]
    i = i + 1
    local spec = spec_of(node)
    local policy = spec[S_ONFAIL]
    local new = 'failed'
    if policy == 'I' then new = 'ignored' elseif policy == 'R' then new = 'removed' end
    set_state(node, redis.call('HGET', K_STATE, node), new)
    redis.call('HSET', K_ERROR, node, err)
    redis.call('HSET', K_FAILED, node, how)
    redis.call('ZREM', K_READY, node)
    redis.call('HDEL', K_TOKEN, node)
    redis.call('HDEL', K_PENDING, node)
    if how == 'o' and redis.call('LLEN', K_FAILURES) < FAILURES_CAP then
      local attempt = tonumber(redis.call('HGET', K_ATTEMPT, node) or '0')
      redis.call('RPUSH', K_FAILURES, cjson.encode({node, err, attempt}))
    end
    emit(new, node, 'error', err)
    local parents = parents_of(node)
    if #parents == 0 then root_failed = true end
    for _, p in ipairs(parents) do
      if policy == 'P' then
        -- Only a parent still waiting is failed: one that continueParent already released
        -- (ready, running or done) keeps going, whenever this child's failure comes.
        local pst = redis.call('HGET', K_STATE, p)
        if not seen[p] and (pst == 'waiting-children' or pst == 'expanding') then
          seen[p] = true
          local cause
          if how == 'o' then
            cause = 'child "' .. node .. '" failed: ' .. err
          else
            cause = 'child "' .. node .. '" failed (root cause: node "' .. first .. '": ' ..
              first_error .. ')'
          end
          work[#work + 1] = {p, cause, 'p'}
        end
      elseif policy == 'C' then
        if redis.call('HGET', K_STATE, p) == 'waiting-children' then unlock(p, now, out) end
      else
        child_settled(p, now, out)
      end
    end
  end
  return root_failed
end

--[[
  The current attempt of active `node` failed with `err`: retry after backoff while attempts
  remain, else settle by onFailure. `lost` says the attempt did not fail by its own code (its
  pod or worker went away, or it was handed back). Returns {action, retry_at_ms}; fills `out`
  with nodes the engine must put on their queues.
]]
local function attempt_failed(node, err, now, share, out, lost)
  redis.call('HDEL', K_TOKEN, node)
  redis.call('HDEL', K_RESULT, node)
  redis.call('HSET', K_ERROR, node, err)
  local phase = flow_phase()
  if phase ~= 'Running' then
    -- The flow already ended: no retry, nothing more moves. An attempt cut off by the end
    -- (a cancelled flow's stopped pod, a worker handing back, a lapsed lease) did not fail:
    -- it is cancelled. A real failure of the node's code in a failed flow is recorded.
    if lost or phase == 'Cancelled' then
      cancel_node(node, 'cancelled: the flow ended while this attempt ran (' .. err .. ')')
      return {'cancelled', false}
    end
    set_state(node, 'active', 'failed')
    redis.call('HSET', K_FAILED, node, 'o')
    emit('failed', node, 'error', err)
    return {'failed', false}
  end
  local spec = spec_of(node)
  local attempt = tonumber(redis.call('HGET', K_ATTEMPT, node) or '0')
  if attempt < spec[S_ATTEMPTS] then
    local delay = backoff_ms(spec, attempt, share)
    local due = now + delay
    schedule(node, 'active', due, now, out, spec)
    emit('retry', node, 'attempt', attempt, 'at', now, 'due', due, 'error', err)
    return {'retry', due}
  end
  if settle_failure(node, err, now, out) then
    finish_flow('Failed', now)
  else
    maybe_succeed(now)
  end
  return {'failed', false}
end
