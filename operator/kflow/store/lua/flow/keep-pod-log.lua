--[[
  Keep the tail of one finished attempt's container log (or why its pod never started) with
  the flow, under the flow's byte budget: the operator calls it before it deletes the
  attempt's Job, so the log outlives the pod.

  Keys: the flow group (flow/_keys.lua); uses meta, podlogs.
  ARGV[1] node   ARGV[2] attempt number   ARGV[3] text (already cut to the per-attempt bound)
  ARGV[4] "1" the attempt failed, "0" it succeeded   ARGV[5] the flow's budget in bytes
  Returns (JSON): "kept"; "over-budget" (not kept, counted in the "dropped" field); "no-flow"
  (the flow is not in Redis: nothing is written, so no key outlives it).
  Events: none.

  The podlogs hash: "<node>|<attempt>" -> text, "<node>|n" -> the highest attempt kept of the
  node (what a reader asks for), "bytes" -> the texts' total, "dropped" -> texts not kept.
  None of the last three can be an attempt's field: those end in "|" and digits.
  Budget: the texts of a flow stay within ARGV[5] bytes together. A succeeded attempt's text
  is kept only while the total stays within half of it, so failures, the logs people read,
  always find the other half. A text kept again for the same attempt (a replayed Job event,
  a node retried from attempt 1 after a flow retry) replaces the earlier one and its bytes.
]]
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib

-- Only HGET, HSET and HINCRBY: no command beyond those the other scripts need (store/acl.py).
if not redis.call('HGET', K_META, 'phase') then
  return cjson.encode('no-flow')
end
local node, attempt, text = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local failed, budget = ARGV[4] == '1', tonumber(ARGV[5])
local field = node .. '|' .. attempt
local used = tonumber(redis.call('HGET', K_PODLOGS, 'bytes') or '0')
local before = redis.call('HGET', K_PODLOGS, field)
local total = used - (before and #before or 0) + #text
local limit = budget
if not failed then limit = math.floor(budget / 2) end
if total > limit then
  redis.call('HINCRBY', K_PODLOGS, 'dropped', '1')
  apply_expiry()
  return cjson.encode('over-budget')
end
redis.call('HSET', K_PODLOGS, field, text, 'bytes', total)
if attempt > tonumber(redis.call('HGET', K_PODLOGS, node .. '|n') or '0') then
  redis.call('HSET', K_PODLOGS, node .. '|n', attempt)
end
apply_expiry()
return cjson.encode('kept')
