--[[
  Read the inputs of several nodes of one flow in one call (a worker's batch): for each,
  the values of its completed children, the errors of its children that failed under
  onFailure=ignore, and the errors of its children that failed for good (a parent runs with
  such a child only when continueParent released it). Read-only.

  Keys: the flow group (flow/_keys.lua); uses state, children, result, error.
  ARGV: nodes
  Returns (JSON): [ {[child, value JSON, ...], [child, error, ...] ignored,
                     [child, error, ...] failed, [child, items, ...] maps} per node ]
    A skipped child (its condition was false) is among the ignored, with why as its error.
    A completed map child (forEach) is in maps, with its number of items, not in values:
    the engine reads its items' values in pages (a map can have 100,000 items).
    (flat name/value lists: cjson cannot tell an empty object from an empty list)
    A node whose children list is longer than INLINE_BYTES gets {[], [], [], [], true}:
    reading 100,000 children in one call would hold Redis ~200 ms, so the engine reads them
    a page at a time instead.
  Events: none.
]]
-- @include flow/_keys
-- @include flow/_lib

local INLINE_BYTES = 32768  -- about 1,500 children with typical names

local res = {}
for i = 1, #ARGV do
  local values, ignored, failed, maps = {}, {}, {}, {}
  local paged = redis.call('HSTRLEN', K_CHILDREN, ARGV[i]) > INLINE_BYTES
  for _, c in ipairs(paged and {} or list_of(K_CHILDREN, ARGV[i])) do
    local st = redis.call('HGET', K_STATE, c)
    if st == 'completed' then
      -- Every completed node has a result but a map node (its value is its items').
      local value = redis.call('HGET', K_RESULT, c)
      local record = not value and map_record(c)
      if record and map_source(spec_of(c)) then
        maps[#maps + 1] = c
        maps[#maps + 1] = record.items
      else
        values[#values + 1] = c
        values[#values + 1] = value or 'null'
      end
    elseif st == 'ignored' or st == 'failed' or st == 'skipped' then
      local into = ignored
      if st == 'failed' then into = failed end
      into[#into + 1] = c
      into[#into + 1] = redis.call('HGET', K_ERROR, c) or ''
    end
  end
  res[i] = {values, ignored, failed, maps, paged}
end
return cjson.encode(res)
