--[[
  The engine judged the condition (`when`) of a deciding node: run it, skip it, or fail it.

  Keys: the flow group (flow/_keys.lua); uses meta, state, parents, error, requeues, ready,
  attempt (and the keys of schedule, settle_failure and the map steps in flow/_lib and
  flow/_attempt-failure).
  ARGV[1] node   ARGV[2] verdict: "run" | "skip" | "fail"   ARGV[3] text: why it is skipped,
          or the error that fails it
  run   the condition is true (remembered: K_REQUEUES "w|<node>"): the node is scheduled
        (start delay honoured), or a map node begins adding its items
  skip  the condition is false: the node is "skipped", settled; its parents go on as for an
        ignored child (the text is its error), and a skipped root is a root done
  fail  the condition could not be evaluated: the node fails for good with the text
  Returns (JSON): the flow-step envelope (flow/_reply), one row {decided}: false when the node
    was not deciding or the flow is not running (nothing changed).
  Events: skipped (node, reason), or those of the step taken (failed, completed, flow phase).
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply
-- @include flow/_attempt-failure

local node, verdict, text = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', K_META, 'phase') ~= 'Running'
    or redis.call('HGET', K_STATE, node) ~= 'deciding' then
  return step_reply({false}, {})
end
local now = now_ms()
local out = {}
local spec = spec_of(node)
if verdict == 'run' then
  redis.call('HSET', K_REQUEUES, 'w|' .. node, '1')
  redis.call('ZREM', K_READY, node)
  if map_source(spec) then
    begin_map(node, 'deciding', now)
  else
    schedule(node, 'deciding', now + spec[S_START_DELAY], now, out, spec)
  end
elseif verdict == 'skip' then
  redis.call('ZREM', K_READY, node)
  set_state(node, 'deciding', 'skipped')
  redis.call('HSET', K_ERROR, node, text)
  emit('skipped', node, 'reason', text)
  settle_parents(node, now, out)
else
  redis.call('HSET', K_ATTEMPT, node, '1')  -- its one try at judging the condition
  if settle_failure(node, text, now, out) then
    finish_flow('Failed', now)
  else
    maybe_succeed(now)
  end
end
return step_reply({true}, out)
