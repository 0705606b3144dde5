--[[
  Write one bounded chunk of a Pending flow's nodes (the engine keeps chunks small, so no
  other client waits long). Chunks come in the compiled order, children before parents;
  a chunk already written is skipped, so an interrupted add is repaired by adding again.

  Keys: the flow group (flow/_keys.lua); uses meta, state, spec, parents, children, data,
  pending, counts, ready.
  ARGV[1] chunk number (1-based)
  ARGV[2..] six per node: name, spec JSON (see flow/_lib), parents JSON list or "",
            children JSON list or "", start, data JSON or "" (none)
            start: n > 0 waits for n children; 0 a leaf ready at once; -d a leaf delayed d ms;
                   "x" a map node with no children: expanding at once (see flow/_lib);
                   "w" a node with no children and a condition: deciding at once

  Leaves are written ready (or delayed by their start delay) and put on the flow's ready
  set; the flow stays Pending, so nothing is dispatched before activate.
  Returns (JSON): "written", "skipped" (chunk already written), or an error reply when the
  chunk is out of order or the flow is not Pending.
  Events: none.
]]
-- @include flow/_keys
-- @include _clock

local m = redis.call('HMGET', K_META, 'phase', 'written')
if m[1] ~= 'Pending' then return redis.error_reply('KFLOW flow is not Pending') end
local chunk = tonumber(ARGV[1])
local written = tonumber(m[2])
if chunk <= written then return cjson.encode('skipped') end
if chunk ~= written + 1 then return redis.error_reply('KFLOW chunk out of order') end

local now = now_ms()
local states, specs, parents, children, datas, pendings = {}, {}, {}, {}, {}, {}
local ready_z, counts = {}, {}
local function push2(t, a, b) t[#t + 1] = a; t[#t + 1] = b end
-- HSET/ZADD take the whole chunk at once; unpack() is bounded, so flush in slices.
local function flush(cmd, key, t)
  local step = 4000
  for i = 1, #t, step do
    redis.call(cmd, key, unpack(t, i, math.min(i + step - 1, #t)))
  end
end

for i = 2, #ARGV, 6 do
  local name, spec, ps, cs = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local start, data = tonumber(ARGV[i + 4]), ARGV[i + 5]
  local code = ARGV[i + 4]
  push2(specs, name, spec)
  if ps ~= '' then push2(parents, name, ps) end
  if data ~= '' then push2(datas, name, data) end
  local state
  if cs ~= '' then push2(children, name, cs) end
  if code == 'x' or code == 'w' then
    -- A map node or a condition without children: the engine adds the items, or judges the
    -- condition, once the flow runs (it finds them on the ready set).
    state = code == 'x' and 'expanding' or 'deciding'
    push2(ready_z, now, name)
  elseif start > 0 then
    push2(pendings, name, start)
    state = 'waiting-children'
  else
    if start < 0 then
      state = 'delayed'
      push2(ready_z, now - start, name)
    else
      state = 'ready'
      push2(ready_z, now, name)
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
for state, n in pairs(counts) do redis.call('HINCRBY', K_COUNTS, state, n) end
redis.call('HSET', K_META, 'written', chunk)
return cjson.encode('written')
