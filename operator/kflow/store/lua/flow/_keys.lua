--[[
  Include: the key list of the flow group, stated once. Every flow script takes these 21
  keys, or the first of them up to the one its `-- @keys-through <key>` line names, all under
  the flow's hash tag {<flow uid>}, in the order of the fields of kflow.store.keys.FlowKeys;
  none of them is ever built in Lua. Redis builds a call's KEYS table one key at a time
  (~1,500 instructions a key), so the keys of the hot scripts come first: flow/add takes
  meta..events, flow/start meta..times. A key a script does not take is nil in it.

    KEYS[1] meta      hash: namespace, name, phase, total, roots_left, times, ttl, suspended
    KEYS[2] state     hash node -> state
    KEYS[3] spec      hash node -> packed static options (see _lib)
    KEYS[4] parents   hash node -> JSON list (only nodes that have parents)
    KEYS[5] children  hash node -> JSON list (only nodes that have children)
    KEYS[6] data      hash node -> input JSON (only nodes with data)
    KEYS[7] pending   hash node -> dependencies not yet settled (waiting nodes only)
    KEYS[8] counts    hash state -> number of nodes
    KEYS[9] ready     zset node -> time ready / due (ready and delayed nodes)
    KEYS[10] events   stream, bounded
    KEYS[11] attempt  hash node -> attempts started
    KEYS[12] token    hash node -> fencing token of the running attempt
    KEYS[13] result   hash node -> return value JSON
    KEYS[14] progress hash node -> progress JSON of the running attempt
    KEYS[15] error    hash node -> last error text
    KEYS[16] times    hash node -> "<start ms>" (first attempt of this run started),
                      "<start ms> <end ms>" (settled after starting)
    KEYS[17] failed   hash node -> "o" own failure | "p" propagated | "c" cancelled
    KEYS[18] requeues hash "i|node" infrastructure retries, "s|node" stalls
    KEYS[19] failures list: first failures, capped
    KEYS[20] logs     stream, bounded: log lines of attempts
    KEYS[21] podlogs  hash "<node>|<attempt>" -> container log tail; "bytes", "dropped"
]]
local K_META, K_STATE, K_SPEC, K_PARENTS, K_CHILDREN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5] -- @per-call
local K_DATA, K_PENDING, K_COUNTS, K_READY, K_EVENTS = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10] -- @per-call
local K_ATTEMPT, K_TOKEN, K_RESULT, K_PROGRESS, K_ERROR = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15] -- @per-call
local K_TIMES, K_FAILED, K_REQUEUES, K_FAILURES = KEYS[16], KEYS[17], KEYS[18], KEYS[19] -- @per-call
local K_LOGS, K_PODLOGS = KEYS[20], KEYS[21] -- @per-call
