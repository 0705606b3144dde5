--[[
  Delete every key of a flow (the Flow object is gone). Its leftover queue entries are
  dropped lazily: start-19 refuses nodes of a missing flow.

  KEYS[1..19]  the flow's keys (kflow.store.keys.FLOW_KEY_NAMES), all under tag {<flow uid>}:
    [1] meta  [2] state  [3] spec  [4] parents  [5] children  [6] data  [7] pending
    [8] attempt  [9] token  [10] result  [11] error  [12] progress  [13] counts  [14] ready
    [15] failed  [16] requeues  [17] failures  [18] events  [19] logs

  ARGV: none.
  Returns (JSON): number of keys removed.
  Events: none (the stream goes too).
]]
return cjson.encode(redis.call('UNLINK', unpack(KEYS)))
