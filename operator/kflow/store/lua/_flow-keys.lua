--[[
  Include: names for the flow's keys. Every flow script receives the same fixed list of
  19 keys, all under the flow's hash tag, in the order of kflow.store.keys.FLOW_KEY_NAMES.
  Passing them all keeps one layout for every script; none of them is ever built in Lua.
]]
local K_META, K_STATE, K_SPEC, K_PARENTS, K_CHILDREN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_DATA, K_PENDING, K_ATTEMPT, K_TOKEN, K_RESULT = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_ERROR, K_PROGRESS, K_COUNTS, K_READY, K_FAILED = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local K_REQUEUES, K_FAILURES, K_EVENTS, K_LOGS = KEYS[16], KEYS[17], KEYS[18], KEYS[19]
