--[[
  Add one chunk of a map node's items (forEach; see flow/_lib). The engine computes the
  items and calls this in order; a chunk that does not start where the last one ended is
  refused with the count added so far, so an expansion cut off by a crash resumes where it
  stopped and two expanders never add an item twice.

  Keys: the flow group (flow/_keys.lua); uses meta, state, spec, parents, data, pending,
  progress, counts, ready, events.
  ARGV[1] map node   ARGV[2] items in all (n)   ARGV[3] index of this chunk's first item
  ARGV[4..] each item's data JSON, in index order (none: the last call of an empty list)

  Each item becomes "<map>[<index>]": the map node's queue and options, the map node as its
  one parent, ready at once (or delayed by the map node's start delay). After the last chunk
  the map node waits for its items, or completes when every item already settled.
  Returns (JSON): the flow-step envelope (flow/_reply), one row {status, added}:
    "added"    this chunk was written; added = items written so far
    "behind"   the chunk does not start at `added` (another expander got there first)
    "gone"     the map node is not expanding (failed, cancelled, finished) or the flow is
               not running: nothing written
  queued holds the items made ready; expand may hold parents a completed map unlocked.
  Events: expanded (node, added, items); completed when the map node completes.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply

local node, total, first = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local phase = redis.call('HGET', K_META, 'phase')
if (phase ~= 'Running' and phase ~= 'Pending')
    or redis.call('HGET', K_STATE, node) ~= 'expanding' then
  return step_reply({{'gone', 0}}, {})
end
local record = map_record(node) or {items = total, added = 0}
if first ~= record.added then return step_reply({{'behind', record.added}}, {}) end

local now = now_ms()
local spec = {}  -- a copy: the decoded spec may be shared (flow/_lib, decode_shared)
for k, v in pairs(spec_of(node)) do spec[k] = v end
spec[S_FOREACH] = nil  -- an item is a plain node: no source, and the map's condition
spec[S_WHEN] = nil     -- was judged before it expanded
local item_spec = cjson.encode(spec)
local parents = cjson.encode({node})
local delay = spec[S_START_DELAY]
local out = {}
local count = #ARGV - 3
for k = 1, count do
  local name = node .. '[' .. (first + k - 1) .. ']'
  redis.call('HSET', K_SPEC, name, item_spec)
  redis.call('HSET', K_PARENTS, name, parents)
  redis.call('HSET', K_DATA, name, ARGV[3 + k])
  schedule(name, nil, now + delay, now, out, spec)
end
redis.call('HINCRBY', K_META, 'total', count)
local pending = redis.call('HINCRBY', K_PENDING, node, count)
record.added = first + count
record.items = total
redis.call('HSET', K_PROGRESS, node, cjson.encode(record))
if record.added >= total then
  emit('expanded', node, 'added', record.added, 'items', total)
  if pending <= 0 then
    complete_map(node, now, out)
  else
    redis.call('ZREM', K_READY, node)
    set_state(node, 'expanding', 'waiting-children')
  end
end
return step_reply({{'added', record.added}}, out)
