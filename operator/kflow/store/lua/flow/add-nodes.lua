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
-- @include flow/_add-nodes

local m = redis.call('HMGET', K_META, 'phase', 'written')
if m[1] ~= 'Pending' then return redis.error_reply('KFLOW flow is not Pending') end
local chunk = tonumber(ARGV[1])
local written = tonumber(m[2])
if chunk <= written then return cjson.encode('skipped') end
if chunk ~= written + 1 then return redis.error_reply('KFLOW chunk out of order') end
return cjson.encode(write_chunk(chunk, ARGV, 2))
