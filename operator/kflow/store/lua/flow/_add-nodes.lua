--[[
  Include: write one chunk of a Pending flow's nodes (flow/add-nodes.lua documents the
  node arguments): `a` holds them from index `first` on, six per node. Needs flow/_keys and
  _clock. The caller checked the flow is Pending and the chunk is the next one. `whole`: the
  flow's only chunk, written in the call that creates the flow (flow/add): its counts are set
  in one HSET and the meta record already says it is written.
  Returns "written".
]]
local function write_chunk(chunk, a, first, whole)
  local now = now_ms()
  local states, specs, parents, children, datas, pendings = {}, {}, {}, {}, {}, {}
  local ready_z, counts = {}, {}
  local function push2(t, x, y) t[#t + 1] = x; t[#t + 1] = y end
  -- HSET/ZADD take the whole chunk at once; unpack() is bounded, so flush in slices.
  local function flush(cmd, key, t)
    local step = 4000
    for i = 1, #t, step do
      redis.call(cmd, key, unpack(t, i, math.min(i + step - 1, #t)))
    end
  end

  for i = first, #a, 6 do
    local name, spec, ps, cs = a[i], a[i + 1], a[i + 2], a[i + 3]
    local start, data = tonumber(a[i + 4]), a[i + 5]
    local code = a[i + 4]
    push2(specs, name, spec)
    if ps ~= '' then push2(parents, name, ps) end
    if data ~= '' then push2(datas, name, data) end
    local state
    if cs ~= '' then push2(children, name, cs) end
    if code == 'x' or code == 'w' then
      -- A map node or a condition without children: the engine adds the items, or judges the
      -- condition, once the flow runs (it finds them on the ready set).
      state = code == 'x' and 'expanding' or 'deciding'
      push2(ready_z, now_text(), name)
    elseif start > 0 then
      push2(pendings, name, code)
      state = 'waiting-children'
    else
      if start < 0 then
        state = 'delayed'
        push2(ready_z, ms_text(now - start), name)
      else
        state = 'ready'
        push2(ready_z, now_text(), name)
      end
    end
    push2(states, name, state)
    counts[state] = (counts[state] or 0) + 1
  end

  flush('HSET', K_SPEC, specs)
  flush('HSET', K_PARENTS, parents)
  flush('HSET', K_CHILDREN, children)
  flush('HSET', K_DATA, datas)
  flush('HSET', K_PENDING, pendings)
  flush('HSET', K_STATE, states)
  flush('ZADD', K_READY, ready_z)
  -- Numbers as text (_clock, ms_text): Redis formats a Lua number with "%.17g".
  if whole then  -- the flow's only chunk (flow/add): its counts are these; meta says written
    local fields = {}
    for state, n in pairs(counts) do push2(fields, state, string.format('%d', n)) end
    redis.call('HSET', K_COUNTS, unpack(fields))
    return 'written'
  end
  for state, n in pairs(counts) do
    redis.call('HINCRBY', K_COUNTS, state, string.format('%d', n))
  end
  redis.call('HSET', K_META, 'written', string.format('%d', chunk))
  return 'written'
end
