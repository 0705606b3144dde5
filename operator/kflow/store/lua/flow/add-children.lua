--[[
  A running node adds children, to itself or to a waiting parent (BullMQ's dynamic children,
  fenced): only the attempt that holds the node may add, and once an attempt has added, a
  later attempt of the same run (a retry after a crash) adds nothing and is told what was
  added, so a node ends up with one set of children however often its code runs. The same
  attempt may add more in further calls, to the same target.

  Keys: the flow group (flow/_keys.lua); uses meta, state, token, spec, parents, children,
  data, pending, requeues (and those of schedule, begin_map, begin_decide in flow/_lib).
  ARGV[1] node   ARGV[2] token of its attempt   ARGV[3] target: "" (the node itself) or the
          name of a parent in waiting-children
  ARGV[4] the added nodes' queue names, JSON list
  ARGV[5..] six per added node, as flow/add-nodes.lua (name, spec, parents, children, start,
          data); the added nodes that are nobody's child among them list the target as parent
  Returns (JSON): the flow-step envelope (flow/_reply), one row {status, detail}:
    "added"    written; detail: the names added by this attempt so far (JSON list)
    "already"  an earlier attempt of this run added, or these very children exist under the
               target already: nothing written; detail: the names
    "stale"    the attempt does not hold the node (or the flow is not running)
    "target"   the target is not a parent waiting for its children; detail: its state
    "exists"   a node of that name exists in the flow; detail: the name
  queued holds the added nodes that are ready at once.
  Events: added (node, target, count).
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_fence
-- @include flow/_reply

local node, token, target = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', K_META, 'phase') ~= 'Running' or not holds(node, token) then
  return step_reply({{'stale', ''}}, {})
end
local fence_field = 'a|' .. node
local raw = redis.call('HGET', K_REQUEUES, fence_field)
local record = {t = token, p = target, n = {}}
if raw then
  record = cjson.decode(raw)
  if record.t ~= token then return step_reply({{'already', cjson.encode(record.n)}}, {}) end
  if record.p ~= target then
    return step_reply({{'target', 'one attempt adds to one target: it added to ' ..
      (record.p == '' and 'itself' or record.p)}}, {})
  end
end
local parent = target
if target == '' then
  parent = node
else
  local st = redis.call('HGET', K_STATE, target)
  if st ~= 'waiting-children' or map_source(spec_of(target)) then
    return step_reply({{'target', st and ('it is ' .. st) or 'no such node'}}, {})
  end
end
-- The same children again (a later run of a node that added children to itself, say):
-- nothing to add when every one exists under this parent already.
local present, names = 0, {}
for i = 5, #ARGV, 6 do
  names[#names + 1] = ARGV[i]
  if redis.call('HEXISTS', K_STATE, ARGV[i]) == 1 then present = present + 1 end
end
if present > 0 then
  local all_here = present == #names
  for i = 5, #ARGV, 6 do
    if not all_here then break end
    local here = false
    for _, p in ipairs(list_of(K_PARENTS, ARGV[i])) do
      if p == parent then here = true end
    end
    -- An inline grandchild's parent is one of the added: it is here if that one is.
    if not here and ARGV[i + 2] ~= '' then
      for _, p in ipairs(cjson.decode(ARGV[i + 2])) do
        for _, n in ipairs(names) do if p == n then here = true end end
      end
    end
    all_here = here
  end
  if all_here then return step_reply({{'already', cjson.encode(names)}}, {}) end
  for i = 5, #ARGV, 6 do
    if redis.call('HEXISTS', K_STATE, ARGV[i]) == 1 then
      return step_reply({{'exists', ARGV[i]}}, {})
    end
  end
end

local now = now_ms()
local out = {}
local roots = {}
local count = 0
for i = 5, #ARGV, 6 do
  local name, spec, ps, cs = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local code, data = ARGV[i + 4], ARGV[i + 5]
  count = count + 1
  redis.call('HSET', K_SPEC, name, spec)
  if ps ~= '' then redis.call('HSET', K_PARENTS, name, ps) end
  if cs ~= '' then redis.call('HSET', K_CHILDREN, name, cs) end
  if data ~= '' then redis.call('HSET', K_DATA, name, data) end
  local parents = cjson.decode(ps)
  for _, p in ipairs(parents) do
    if p == parent then roots[#roots + 1] = name end
  end
  local start = tonumber(code)
  if code == 'x' then
    begin_map(name, nil, now)
  elseif code == 'w' then
    begin_decide(name, nil, now)
  elseif start > 0 then
    set_state(name, nil, 'waiting-children')
    redis.call('HSET', K_PENDING, name, start)
  else
    schedule(name, nil, now - start, now, out)
  end
  record.n[#record.n + 1] = name
end
local siblings = list_of(K_CHILDREN, parent)
for _, r in ipairs(roots) do siblings[#siblings + 1] = r end
redis.call('HSET', K_CHILDREN, parent, cjson.encode(siblings))
if target ~= '' then redis.call('HINCRBY', K_PENDING, target, #roots) end
redis.call('HINCRBY', K_META, 'total', count)
local queues = cjson.decode(redis.call('HGET', K_META, 'queues') or '[]')
local known = {}
for _, q in ipairs(queues) do known[q] = true end
for _, q in ipairs(cjson.decode(ARGV[4])) do
  if not known[q] then queues[#queues + 1] = q; known[q] = true end
end
redis.call('HSET', K_META, 'queues', cjson.encode(queues))
redis.call('HSET', K_REQUEUES, fence_field, cjson.encode(record))
emit('added', node, 'target', parent, 'count', count)
return step_reply({{'added', cjson.encode(record.n)}}, out)
