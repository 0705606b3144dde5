--[[
  Include: settle a batch of attempts of one flow, each fenced by its token. Needs
  _flow-keys, _now and _flow-lib. ARGV holds groups of `width` values from index `first`
  on, each group starting with node and token; `settle(i, node, now, out)` runs for every
  attempt whose node is still active with that token (i: the group's first ARGV index).
  Returns the script's reply (JSON): {shown phase, namespace, [ {accepted, the node's
  queue} per group ], out}; a flow that no longer exists refuses every group.
]]
local function settle_attempts(first, width, settle)
  if not redis.call('HGET', K_META, 'phase') then
    local rows = {}
    for _ = first, #ARGV, width do rows[#rows + 1] = {false, ''} end
    return cjson.encode({'Missing', '', rows, {}})
  end
  local now = now_ms()
  local out = {}
  local rows = {}
  for i = first, #ARGV, width do
    local node, token = ARGV[i], ARGV[i + 1]
    local ok = redis.call('HGET', K_STATE, node) == 'active' and
      redis.call('HGET', K_TOKEN, node) == token
    if ok then settle(i, node, now, out) end
    local _, queue = where(node)
    rows[#rows + 1] = {ok, queue}
  end
  apply_expiry()
  return cjson.encode({shown_phase(), redis.call('HGET', K_META, 'namespace') or '', rows, out})
end
