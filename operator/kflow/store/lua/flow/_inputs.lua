--[[
  Include: the inputs of one node of a flow, read-only. Needs flow/_keys and flow/_lib.
  {[child, value JSON, ...], [child, error, ...] ignored, [child, error, ...] failed,
   [child, items, ...] maps, paged}
    A skipped child (its condition was false) is among the ignored, with why as its error.
    A completed map child (forEach) is in maps, with its number of items, not in values:
    the engine reads its items' values in pages (a map can have 100,000 items).
    (flat name/value lists: cjson cannot tell an empty object from an empty list)
    A node whose children list is longer than INPUTS_INLINE_BYTES gets
    {[], [], [], [], true}: reading 100,000 children in one call would hold Redis ~200 ms,
    so the engine reads them a page at a time instead.
    A node without children gets "" instead: building and encoding the five empty parts
    cost ~1.5 µs per node, which a batch of a fan-out's leaves pays per leaf.
]]
local INPUTS_INLINE_BYTES = 32768  -- about 1,500 children with typical names

-- `listed`: the node's children list when the caller read it already (false: none).
local function inputs_of(node, listed)
  -- One read of the list, measured before it is decoded: a wide fan-in's list (~2 MB for
  -- 100,000 children) costs a copy here, not a decode and a read per child.
  local raw = listed
  if raw == nil then raw = redis.call('HGET', K_CHILDREN, node) end  -- false: a leaf
  if not raw then return '' end
  local values, ignored, failed, maps = {}, {}, {}, {}
  local paged = #raw > INPUTS_INLINE_BYTES
  if not paged then
    for _, c in ipairs(cjson.decode(raw)) do
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
  end
  return {values, ignored, failed, maps, paged}
end
