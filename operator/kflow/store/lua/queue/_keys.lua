--[[
  Include: the key list of the queue group, stated once. Every queue script takes these 7
  keys, all under the queue's hash tag {<namespace>/<queue>}, in the order of the fields of
  kflow.store.keys.QueueKeys.

    KEYS[1] ready    zset member "<uid>|<node>", score from rank and sequence (_order)
    KEYS[2] active   zset member "<uid>|<node>|<token>", score lease deadline ms
    KEYS[3] delayed  zset member "<uid>|<node>|<rank>", score due ms
    KEYS[4] config   hash concurrency, rate_max, rate_per_ms, max_stalled
    KEYS[5] rate     zset one member per take in the rate window, score take time ms
    KEYS[6] seq      string: the FIFO sequence
    KEYS[7] takes    stream: one entry per take call that took something: fields n (how
                     many) and at (the take time the rate window uses, ms); bounded
                     (MAXLEN ~ 10000). The record of starts the rate limit is judged against.
]]
local K_READY, K_ACTIVE, K_DELAYED, K_CONFIG = KEYS[1], KEYS[2], KEYS[3], KEYS[4] -- @per-call
local K_RATE, K_SEQ, K_TAKES = KEYS[5], KEYS[6], KEYS[7] -- @per-call
