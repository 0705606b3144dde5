--[[
  Start attempts of nodes the queue just handed out (the queue step ran first and holds
  each under its token). A node starts only if the flow is Running, not suspended, and the
  node is still ready (or delayed and due); anything else is refused and the engine drops
  the queue's hold.

  Keys: the flow group (flow/_keys.lua); uses meta, state, spec, children, data, counts,
  ready, events, attempt, token, result, progress, error, times: it takes the keys through
  times (@keys-through).
  ARGV[1] owner (who runs the attempts)
  ARGV[2] "1": read each started node's inputs too (a worker runs it next), "0": not
  ARGV[3..] pairs: node, token (unique per attempt; becomes the node's fencing token)

  Returns (JSON): the flow-step envelope (flow/_reply), queued empty, one row per pair:
    {node, status, attempt, data JSON, timeout ms, due, rank, inputs or false}
    (the four numbers as text where they are small integers: flow/_lib, int_text)
    status "ok"        started: attempt number, data and timeout (-1: none) filled in,
                       and in due the ms it waited since it became ready (or due), -1: unknown
           "suspended" flow suspended: node stays ready and is re-queued on resume
           "early"     node delayed and not yet due: due and queue rank filled in
           "gone"      flow missing/finished/cancelled or node no longer ready
    inputs     with ARGV[2] "1", a started node's inputs (flow/_inputs); else false
  Events: started (node, attempt, owner).
]]
-- @keys-through times
-- @include flow/_keys
-- @include _clock
-- @include flow/_lib
-- @include flow/_reply
-- @include flow/_inputs
-- @include flow/_start-one

-- A batch's started events go as one entry (flow/_lib, emit); one start's as a plain entry,
-- written at once: gathering it costs a table and a flush for nothing.
EVENT_BATCH = #ARGV > 4
local m = meta()
local now = now_ms()
local res = {}
local with_inputs = ARGV[2] == '1'
local running = m.phase == 'Running' and m.suspended ~= '1'
-- What the loop reads of each node (state, data, spec, children list), read for the whole
-- batch at once. A batch of more than one also reads its attempt counts, waits and times up
-- front, and writes what it changes of each (attempt, token, state, its place on the ready
-- set) at once after the loop. A single node (a chain's step) reads and writes each with one
-- command as it goes: its HINCRBY, ZSCORE and HSETNX are as cheap as the batch's reads, and
-- the batch's lists and loops cost Redis more than they save for one (callgrind: a chain
-- start 254,000 -> 235,000 instructions, this and its plain event).
local nodes = {}
for i = 3, #ARGV, 2 do nodes[#nodes + 1] = ARGV[i] end
local states, data, children  -- read below when running (children: with inputs)
local batched = running and #nodes > 1
local attempts, scores  -- read below for a batch
if running and #nodes > 0 then
  states = hmget_map(K_STATE, nodes)
  data = hmget_map(K_DATA, nodes)
  if with_inputs then children = hmget_map(K_CHILDREN, nodes) end
  load_specs(nodes)
end
if batched then
  attempts, scores = {}, {}
  local waiting = {}
  for _, node in ipairs(nodes) do
    if states[node] == 'ready' or states[node] == 'delayed' then waiting[#waiting + 1] = node end
  end
  if #waiting > 0 then
    attempts = hmget_map(K_ATTEMPT, waiting)
    load_times(waiting)
    for i = 1, #waiting, 1000 do
      local last = math.min(i + 999, #waiting)
      local got = redis.call('ZMSCORE', K_READY, unpack(waiting, i, last))
      for j = i, last do scores[waiting[j]] = got[j - i + 1] end
    end
  end
end
local tokens, actives, started, counted  -- a batch's writes, gathered in the loop
if batched then tokens, actives, started, counted = {}, {}, {}, {} end
for i = 3, #ARGV, 2 do
  local node, token = ARGV[i], ARGV[i + 1]
  local r = {node, 'gone', '0', 'null', '-1', '0', '0', false}
  if m.phase == 'Running' then
    if m.suspended == '1' then
      r[2] = 'suspended'
    else
      local st = states[node]
      local score = false  -- when it became ready, or is due
      if batched then
        score = scores[node]
      elseif st == 'ready' or st == 'delayed' then
        score = redis.call('ZSCORE', K_READY, node)
      end
      local due = 0
      if st == 'delayed' then due = tonumber(score or '0') end
      if st == 'delayed' and due > now then
        r[2] = 'early'
        r[6] = due
        r[7] = rank_of(spec_of(node))
      elseif batched and (st == 'ready' or st == 'delayed') then
        local attempt = tonumber(attempts[node] or '0') + 1
        counted[#counted + 1] = node
        counted[#counted + 1] = int_text(attempt)
        tokens[#tokens + 1] = node
        tokens[#tokens + 1] = token
        actives[#actives + 1] = node
        actives[#actives + 1] = 'active'
        started[#started + 1] = node
        states[node] = 'active'  -- a node named twice starts once
        r[6] = int_text(score and math.max(0, now - tonumber(score)) or -1)
        state_changed(node, st, 'active')
        if attempt > 1 then  -- what the attempt before left: its stored result, its progress
          redis.call('HDEL', K_RESULT, node)
          redis.call('HDEL', K_PROGRESS, node)
        end
        local spec = spec_of(node)
        r[2] = 'ok'
        r[3] = int_text(attempt)
        r[4] = data[node] or 'null'
        r[5] = int_text(spec[S_TIMEOUT])
        if with_inputs then r[8] = inputs_of(node, children[node]) end
        emit('started', node, 'attempt', int_text(attempt), 'owner', ARGV[1])
      elseif st == 'ready' or st == 'delayed' then
        redis.call('ZREM', K_READY, node)
        r = start_one(node, st, token, ARGV[1],
                      score and math.max(0, now - tonumber(score)) or -1, with_inputs,
                      data[node], children and children[node])
      end
    end
  end
  res[#res + 1] = r
end
if batched then
  if #tokens > 0 then  -- flow/_lib: keeps the hash a hash table
    tokens[#tokens + 1] = TOKEN_ANCHOR
    tokens[#tokens + 1] = TOKEN_ANCHOR_VALUE
  end
  call_sliced('HSET', K_TOKEN, tokens)
  call_sliced('HSET', K_STATE, actives)
  call_sliced('HSET', K_ATTEMPT, counted)
  call_sliced('ZREM', K_READY, started)
end
return step_reply(res, {})
