--[[
  Include: create a flow's meta record in phase Pending (flow/create.lua documents the
  arguments, `a` being ARGV from its first one). Needs flow/_keys and _clock.
  Returns "created", "resume" or "exists".
]]
local function create_flow(a)
  local phase = redis.call('HGET', K_META, 'phase')
  if phase == 'Pending' then return 'resume' end
  if phase then return 'exists' end
  redis.call('HSET', K_META, 'namespace', a[1], 'name', a[2], 'phase', 'Pending',
    'total', a[3], 'roots_left', a[4], 'ttl', a[5], 'chunks', a[6], 'written', '0',
    'queues', a[7], 'created_at', now_text())
  if a[8] and a[8] ~= '' then redis.call('HSET', K_META, 'defaults', a[8]) end
  return 'created'
end
