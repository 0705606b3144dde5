--[[
  Include: settle a batch of attempts of one flow, each fenced by its token. Needs
  flow/_keys, _clock, flow/_lib, flow/_fence and flow/_reply. ARGV holds groups of `width`
  values from index `first` on, each group starting with node and token;
  `settle(i, node, now, out)` runs for every attempt whose node is still active with that
  token (i: the group's first ARGV index) and returns its outcome, a time (ms) or false,
  and optionally the start row of a node it handed over (flow/complete.lua).
  `queue_at`, when given: the group's value at i + queue_at is the node's queue as its
  caller knows it from the take ("" when it does not), which spares reading the node's spec.
  `finish(now, out)`, when given, runs after the last group (a batch's deferred writes);
  `held(node, token)`, when given, is the fence instead of holds (a batch's own tokens).
  Returns the script's reply, the flow-step envelope (_reply) with one row per group:
    {accepted, the node's queue, outcome, retry time ms or false[, start row]}
  outcome "stale" for a refused group; a flow that no longer exists refuses every group.
]]
local function settle_attempts(first, width, settle, queue_at, finish, held)
  local rows = {}
  if not flow_phase() then
    for _ = first, #ARGV, width do rows[#rows + 1] = {false, '', 'stale', false} end
    return step_reply(rows, {})
  end
  local now = now_ms()
  local out = {}
  for i = first, #ARGV, width do
    local node, token = ARGV[i], ARGV[i + 1]
    local queue = queue_at and ARGV[i + queue_at]
    if not queue or queue == '' then queue = queue_of(node) end
    if (held or holds)(node, token) then
      local outcome, at, started = settle(i, node, now, out)
      rows[#rows + 1] = {true, queue, outcome, at or false, started}
    else
      rows[#rows + 1] = {false, queue, 'stale', false}
    end
  end
  if finish then finish(now, out) end
  apply_expiry()
  return step_reply(rows, out)
end
