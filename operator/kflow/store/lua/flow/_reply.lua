--[[
  Include: the reply envelope of every flow step, decoded in one place
  (kflow.store.redis_store.decode_step). Needs flow/_keys and flow/_lib.

    {phase, namespace, name, rows, queued, expand, decide, exits}
    phase      the phase a reader sees: a suspended running flow shows as "Suspended";
               "Missing" when the flow has no keys
    namespace  the flow's namespace ("" when missing): queue ids are "<namespace>/<queue>"
    name       the flow's name ("" when missing)
    rows       one row per item the script was given; each script documents its rows
    queued     {node, queue, rank, due or 0} per node the step made ready or delayed:
               the engine's queue step puts them on their queues (only in a running flow)
    expand     map nodes (forEach) the step made ready: the engine adds their items
    decide     nodes whose condition (when) the step made ready to judge
    exits      true when the flow has ended and has exit handlers (spec.onExit, kept in
               meta "exit"): the engine starts them; false otherwise, so the end of a flow
               without any costs no read
]]
local function step_reply(rows, queued)
  flush_deferred()
  local m = meta()
  local phase = m.phase or 'Missing'
  if phase == 'Running' and m.suspended == '1' then phase = 'Suspended' end
  local exits = false
  if phase == 'Succeeded' or phase == 'Failed' or phase == 'Cancelled' then
    exits = m.exit ~= false
  end
  return cjson.encode({phase, m.namespace or '', m.name or '', rows, queued, EXPAND, DECIDE,
                       exits})
end
