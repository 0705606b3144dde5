--[[
  Include: create a flow's meta record in phase Pending (flow/create.lua documents the
  arguments, `a` being ARGV from its first one). Needs flow/_keys and _clock. `running`
  (flow/add): the record says Running and all chunks written from the start, since the same
  call writes the nodes; one HSET either way.
  Returns "created", "resume" or "exists".
]]
local function create_flow(a, running)
  local phase = redis.call('HGET', K_META, 'phase')
  if phase == 'Pending' then return 'resume' end
  if phase then return 'exists' end
  local start_phase, written = 'Pending', '0'
  if running then start_phase, written = 'Running', a[6] end  -- flow/add: written and started
  local fields = {'namespace', a[1], 'name', a[2], 'phase', start_phase, 'total', a[3],
    'roots_left', a[4], 'ttl', a[5], 'chunks', a[6], 'written', written, 'queues', a[7],
    'created_at', now_text()}
  if running then
    fields[#fields + 1] = 'started_at'
    fields[#fields + 1] = now_text()
  end
  if a[8] and a[8] ~= '' then
    fields[#fields + 1] = 'defaults'
    fields[#fields + 1] = a[8]
  end
  redis.call('HSET', K_META, unpack(fields))
  return 'created'
end
