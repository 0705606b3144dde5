--[[
  Include: node state bookkeeping shared by the flow scripts. Needs flow/_keys and _clock.

  Run as a function library (kflow.store.scripts), an include's top level runs once, when the
  library loads: state that belongs to one call is marked "-- @per-call" and is set again at
  the start of every call. Nothing else at the top level may change during a call, but for a
  cache of a pure function (INT_TEXT, DECODED), which gives the same answers whatever it
  holds.

  A node's static options live in K_SPEC as a JSON array (see kflow.store.codec.pack_spec):
    [1] queue  [2] priority  [3] attempts  [4] backoff "f"|"e"  [5] backoff delay ms
    [6] backoff max delay ms (-1 none)  [7] jitter 0..1  [8] start delay ms
    [9] timeout ms (-1 none)  [10] onFailure "P"(failParent)|"I"(ignore)|"R"(remove)|"C"(continueParent)
    [11] lifo 1|0 (absent in flows written before it existed: FIFO)
    [12] a map node's item source (forEach; null or absent on every other node, items
         included): {"f": from node, "p": [path keys]} | {"i": [items]} | {"n": count}
    [13] the node's `when` condition (a CEL expression; absent without one)

  A node with a condition is "deciding" once its children are done: the engine evaluates the
  condition (kflow.graph.conditions) and calls flow/decide.lua, which runs it (ready, or a
  map node's expansion), skips it ("skipped": settled, its parents go on as for an ignored
  child) or fails it (the condition could not be evaluated). A condition found true is
  remembered (K_REQUEUES "w|<node>"), so the node is not judged again when it runs again.

  A map node never runs itself. Once its children are done it is "expanding": the engine
  adds its items in chunks (flow/expand.lua; K_PROGRESS holds {"items": n, "added": k}),
  each item a node "<map>[<index>]" whose one parent is the map node; then it waits for its
  items ("waiting-children") and completes when they are settled. Its parents read the
  items' values as one list (kflow.store: map values).
]]
local S_QUEUE, S_PRIORITY, S_ATTEMPTS, S_BACKOFF, S_DELAY = 1, 2, 3, 4, 5
local S_MAXDELAY, S_JITTER, S_START_DELAY, S_TIMEOUT, S_ONFAIL, S_LIFO = 6, 7, 8, 9, 10, 11
local S_FOREACH, S_WHEN = 12, 13
-- Map nodes a step made ready to expand: flow/_reply hands them to the engine, which adds
-- their items (flow/expand.lua).
local EXPAND = {} -- @per-call
-- Nodes with a condition a step made ready to judge: flow/_reply hands them to the engine.
local DECIDE = {} -- @per-call

-- A map node's item source, or nil (cjson reads JSON null as a truthy value, not nil).
local function map_source(spec)
  local v = spec[S_FOREACH]
  if type(v) == 'table' then return v end
  return nil
end

-- The node's condition when it still has to be judged in this run, else nil.
local function condition_to_judge(node, spec)
  if type(spec[S_WHEN]) ~= 'string' then return nil end
  if redis.call('HEXISTS', K_REQUEUES, 'w|' .. node) == 1 then return nil end
  return spec[S_WHEN]
end
-- Numbers go to redis.call as text: Redis formats a Lua number argument with "%.17g", which
-- costs more than the command that takes it (callgrind: ~3,000 instructions a number).
local EVENTS_MAXLEN = '1000'
local FAILURES_CAP = 10
-- The token hash holds only the running attempts, so with fewer than 128 in flight Redis keeps
-- it as a listpack, where every HSET and HMGET scans the fields one by one: ~30,000
-- instructions a node in a fan-out run 100 at a time (callgrind). A value longer than 64
-- bytes (Redis's default hash-max-listpack-value) makes Redis keep it as a hash table for
-- good, so a batch start writes TOKEN_ANCHOR with one. No node is named "~" (node names
-- start with a letter or digit), and whatever lists the tokens leaves it out.
local TOKEN_ANCHOR = '~'
local TOKEN_ANCHOR_VALUE = 'kflow keeps this hash a hash table: as a listpack, each field read scans all'
-- States in which nothing more happens to a node in this run of its flow.
local SETTLED_STATES = {'completed', 'failed', 'ignored', 'removed', 'cancelled', 'skipped'}

-- An integer as text. Lua's and cjson's number formatting (sprintf) costs ~0.3 µs a number,
-- so a start's reply rows (attempt, timeout, wait, rank: kflow.store.types reads them with
-- int()) and events carry small integers as text from a cache, filled as they come up.
local INT_TEXT = {}
local function int_text(n)
  local text = INT_TEXT[n]
  if not text then
    text = string.format('%d', n)
    if n >= -1 and n < 1024 then INT_TEXT[n] = text end
  end
  return text
end

-- A node's order key on its queue (kflow.store.codec.queue_rank): priority, LIFO before FIFO.
local function rank_of(spec)
  if spec[S_LIFO] == 1 then return spec[S_PRIORITY] * 2 end
  return spec[S_PRIORITY] * 2 + 1
end

-- Specs and parents lists as decoded JSON: many nodes share one text (a fan-out's leaves have
-- the same spec and parents list; every run of a flow has the same specs), and a decode
-- costs more than the read (~2 µs for a spec's eleven fields). Decoding is a pure function
-- of the text, so the cache outlives the call (as INT_TEXT does), bounded: texts up to
-- DECODED_MAX_BYTES, DECODED_MAX_ENTRIES of them, then it starts again. The tables are shared,
-- so nothing may change one: flow/expand.lua copies the spec it edits.
local DECODED_MAX_BYTES, DECODED_MAX_ENTRIES = 512, 1024
local DECODED, DECODED_ENTRIES = {}, 0
local function decode_shared(raw)
  local value = DECODED[raw]
  if value == nil then
    value = cjson.decode(raw)
    if #raw <= DECODED_MAX_BYTES then
      if DECODED_ENTRIES >= DECODED_MAX_ENTRIES then DECODED, DECODED_ENTRIES = {}, 0 end
      DECODED[raw] = value
      DECODED_ENTRIES = DECODED_ENTRIES + 1
    end
  end
  return value
end

-- A node's spec is written once (flow/add-nodes, expand, add-children) and never changed,
-- so one call reads and decodes each at most once.
local SPECS = {} -- @per-call

-- A node's spec, or nil for a node the flow does not have.
local function known_spec(node)
  local spec = SPECS[node]
  if not spec then
    local raw = redis.call('HGET', K_SPEC, node)
    if not raw then return nil end
    spec = decode_shared(raw)
    SPECS[node] = spec
  end
  return spec
end

local function spec_of(node)
  return known_spec(node) or error('KFLOW node ' .. node .. ' has no spec')
end

-- A batch's reads and writes of one key in as few commands as unpack() allows: the values
-- of `fields` as field -> value (false: missing); `command` (HSET, HDEL, ZREM) given `args`.
-- One field is an HGET, which costs Redis less than an HMGET (a chain's batches are of one).
local function hmget_map(key, fields)
  local out = {}
  if #fields == 1 then
    out[fields[1]] = redis.call('HGET', key, fields[1])
    return out
  end
  for i = 1, #fields, 1000 do
    local last = math.min(i + 999, #fields)
    local got = redis.call('HMGET', key, unpack(fields, i, last))
    for j = i, last do out[fields[j]] = got[j - i + 1] end
  end
  return out
end

local function call_sliced(command, key, args)
  local n = #args
  if n <= 1000 then
    if n > 0 then redis.call(command, key, unpack(args)) end
    return
  end
  for i = 1, n, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- The specs of a batch's nodes in one read, before its loop: spec_of then reads none.
local function load_specs(nodes)
  if #nodes == 1 then
    known_spec(nodes[1])
    return
  end
  local missing = {}
  for _, node in ipairs(nodes) do
    if not SPECS[node] then missing[#missing + 1] = node end
  end
  for node, raw in pairs(hmget_map(K_SPEC, missing)) do
    if raw then SPECS[node] = decode_shared(raw) end
  end
end

-- Parents and children are stored only for nodes that have them.
local function list_of(key, node)
  local v = redis.call('HGET', key, node)
  if v then return cjson.decode(v) end
  return {}
end

-- A node's parents, as a shared decoded list (decode_shared): read it, never change it.
local NO_PARENTS = {}
local function parents_of(node)
  local v = redis.call('HGET', K_PARENTS, node)
  if v then return decode_shared(v) end
  return NO_PARENTS
end

-- The same states as a set, written out: a function library runs this when it loads, when
-- Lua's global functions (ipairs) are not there yet.
local SETTLED = {completed = true, failed = true, ignored = true, removed = true,
                 cancelled = true, skipped = true}

-- When a node ran (K_TIMES): its first attempt's start, then the time it settled. A node put
-- back to run again (a flow retry) starts a new record; one that never started has none.
-- A batch (flow/start, flow/complete) reads its nodes' records first (load_times); for those
-- note_time answers from TIMES and leaves its writes to flush_times, one HSET for the batch
-- where each node cost an HSETNX at start and an HGET and an HSET at settle. Other nodes (a
-- parent the batch settles) read and write at once.
-- TIMES: node -> its record as this call knows it (false: none); TIMES_WRITES: node -> the
-- record flush_times writes.
local TIMES = {} -- @per-call
local TIMES_WRITES = {} -- @per-call

local function load_times(nodes)
  for node, t in pairs(hmget_map(K_TIMES, nodes)) do TIMES[node] = t end
end

local function put_time(node, t)
  TIMES[node] = t
  TIMES_WRITES[node] = t
end

local function note_time(node, old, new)
  local known = TIMES[node]
  if new == 'active' then
    if known == nil then
      redis.call('HSETNX', K_TIMES, node, now_text())
    elseif not known then
      put_time(node, now_text())
    end
  elseif SETTLED[new] then
    local t = known
    if t == nil then t = redis.call('HGET', K_TIMES, node) end
    if t and not string.find(t, ' ', 1, true) then
      t = t .. ' ' .. now_text()
      if known == nil then redis.call('HSET', K_TIMES, node, t) else put_time(node, t) end
    end
  elseif old and SETTLED[old] then
    redis.call('HDEL', K_TIMES, node)
    if known ~= nil then
      TIMES[node] = false
      TIMES_WRITES[node] = nil
    end
  end
end

-- Whatever ends a call writes them (step_reply, apply_expiry), before the flow's expiry.
local function flush_times()
  if next(TIMES_WRITES) == nil then return end
  local fields = {}
  for node, t in pairs(TIMES_WRITES) do
    fields[#fields + 1] = node
    fields[#fields + 1] = t
  end
  TIMES_WRITES = {}
  call_sliced('HSET', K_TIMES, fields)
end

-- Every state change goes through here so that the per-state counts stay exact. The counts
-- change in memory and are written by flush_counts: once per call for a batch of 100 nodes,
-- not twice per node. Whatever reads K_COUNTS or ends a call that changed states flushes
-- first (unsettled, step_reply, apply_expiry; test_store_scripts checks every script).
local COUNT_DELTAS = {} -- @per-call
-- What set_state does besides writing the state: for a script that writes a batch's states
-- in one HSET (flow/start.lua).
local function state_changed(node, old, new)
  if old then COUNT_DELTAS[old] = (COUNT_DELTAS[old] or 0) - 1 end
  COUNT_DELTAS[new] = (COUNT_DELTAS[new] or 0) + 1
  note_time(node, old, new)
end

local function set_state(node, old, new)
  redis.call('HSET', K_STATE, node, new)
  state_changed(node, old, new)
end

-- Up to two changed counts go as one HINCRBY each; more (a completion that unlocks its
-- parent changes four) as one HMGET and one HSET of the new values. There are a dozen states
-- at most, so neither needs slicing.
local function flush_counts()
  if next(COUNT_DELTAS) == nil then return end
  local changed = 0
  for _, delta in pairs(COUNT_DELTAS) do
    if delta ~= 0 then changed = changed + 1 end
  end
  if changed <= 2 then
    for state, delta in pairs(COUNT_DELTAS) do
      if delta ~= 0 then redis.call('HINCRBY', K_COUNTS, state, int_text(delta)) end
    end
  else
    local states, deltas, n = {}, {}, 0
    for state, delta in pairs(COUNT_DELTAS) do
      if delta ~= 0 then
        n = n + 1
        states[n], deltas[n] = state, delta
      end
    end
    local counts = redis.call('HMGET', K_COUNTS, unpack(states))
    local fields = {}
    for i = 1, n do
      fields[2 * i - 1] = states[i]
      fields[2 * i] = int_text(tonumber(counts[i] or '0') + deltas[i])
    end
    redis.call('HSET', K_COUNTS, unpack(fields))
  end
  COUNT_DELTAS = {}
end

--[[
  Events. One entry per event: type, node, then the event's own fields. A script that starts
  or completes a batch of nodes sets EVENT_BATCH, and then consecutive events of one type go
  as one entry: type, then "nodes", a JSON list of [node, field, value, ...] per event (values
  as strings, as XADD stores them); a batch of one is a plain entry. kflow.store reads such
  an entry back as its events, in order, each with the entry's id. An event of another type
  writes the gathered ones first, so the stream keeps the order the events happened in.
  Whatever ends a call writes them (step_reply, apply_expiry).
]]
local EVENT_BATCH = false -- @per-call
local EVENT_TYPE = false -- @per-call
local EVENT_ITEMS = {} -- @per-call

local function add_event(kind, ...)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', kind, ...)
end

local function flush_events()
  if #EVENT_ITEMS == 0 then
    EVENT_TYPE = false
    return
  end
  if #EVENT_ITEMS == 1 then
    add_event(EVENT_TYPE, 'node', unpack(EVENT_ITEMS[1]))
  elseif #EVENT_ITEMS > 1 then
    add_event(EVENT_TYPE, 'nodes', cjson.encode(EVENT_ITEMS))
  end
  EVENT_TYPE = false
  EVENT_ITEMS = {}
end

-- What a call kept in memory to write once (counts, times, a batch's events): whatever ends
-- a call writes it (step_reply, apply_expiry), the counts first since the others do not
-- read them.
local function flush_deferred()
  flush_counts()
  flush_times()
  flush_events()
end

local function emit(kind, node, ...)
  if not EVENT_BATCH then
    add_event(kind, 'node', node, ...)
    return
  end
  if EVENT_TYPE ~= kind then
    flush_events()
    EVENT_TYPE = kind
  end
  local item = {node, ...}
  for i = 2, #item do item[i] = tostring(item[i]) end
  EVENT_ITEMS[#EVENT_ITEMS + 1] = item
end

-- The meta fields a step reads, in one HMGET the first time one is needed, then from memory:
-- a chain's completion used to read phase twice, roots_left, expire_at and the reply's four
-- fields in five calls. Every write of one of them in a script that has read them goes
-- through note_meta (finish_flow, root_done, activate, suspend, resume, cancel, retry).
local META_FIELDS = {'phase', 'suspended', 'namespace', 'name', 'roots_left', 'expire_at', 'exit'}
local META -- @per-call
local function meta()
  if not META then
    local m = redis.call('HMGET', K_META, unpack(META_FIELDS))
    META = {phase = m[1], suspended = m[2], namespace = m[3], name = m[4], roots_left = m[5],
            expire_at = m[6], exit = m[7]}  -- as META_FIELDS: one table of its size, no loop
  end
  return META
end

-- After writing a meta field (`value` false: after deleting it).
local function note_meta(field, value)
  if META then META[field] = value end
end

-- Once a finished flow has an expiry time, every key it writes later (a late result, a new
-- hash created after the finish) must carry the same expiry, or it would outlive the flow.
local function apply_expiry()
  flush_deferred()
  local at = meta().expire_at
  if at then
    for i = 1, #KEYS do redis.call('PEXPIREAT', KEYS[i], at) end
  end
end

-- The node's queue name ("" for a node the flow does not have): where its lease is held.
local function queue_of(node)
  local spec = known_spec(node)
  return spec and spec[S_QUEUE] or ''
end

-- The flow's phase (false when the flow has no keys), read once per call.
local function flow_phase()
  return meta().phase
end

local function finish_flow(phase, now)
  redis.call('HSET', K_META, 'phase', phase, 'finished_at', ms_text(now))
  note_meta('phase', phase)
  local ttl = redis.call('HGET', K_META, 'ttl')
  if ttl and tonumber(ttl) >= 0 then
    local at = ms_text(now + tonumber(ttl) * 1000)  -- as HMGET reads it back: text
    redis.call('HSET', K_META, 'expire_at', at)
    note_meta('expire_at', at)
  end
  emit('flow', '', 'phase', phase)
end

-- Nodes of the flow not settled yet: waiting, delayed, ready or running.
local function unsettled()
  flush_counts()
  local n = tonumber(redis.call('HGET', K_META, 'total'))
  local c = redis.call('HMGET', K_COUNTS, unpack(SETTLED_STATES))
  for i = 1, #c do n = n - tonumber(c[i] or '0') end
  return n
end

-- A running flow succeeds when every root completed and no node is left to settle:
-- continueParent can release a parent (and so a root) while its other children still run,
-- and those run to their end before the flow does.
local function root_done()
  note_meta('roots_left', redis.call('HINCRBY', K_META, 'roots_left', '-1'))
end

local function maybe_succeed(now)
  if tonumber(meta().roots_left) <= 0 and unsettled() == 0 then
    finish_flow('Succeeded', now)
  end
end

-- A node that will not run (again) because its flow ended: cancelled, with the reason as its
-- error, and marked "c" in the failed hash so that a retry of the flow brings it back.
local function cancel_node(node, reason)
  set_state(node, redis.call('HGET', K_STATE, node), 'cancelled')
  redis.call('HSET', K_FAILED, node, 'c')
  redis.call('HSET', K_ERROR, node, reason)
  redis.call('ZREM', K_READY, node)
  redis.call('HDEL', K_TOKEN, node)
  redis.call('HDEL', K_PENDING, node)
  emit('cancelled', node, 'reason', reason)
end

--[[
  Handing over (flow/complete.lua): a worker that completes a chain's step runs the step it
  makes ready next, without the ready set, the queue and a start call in between. A
  completion that may hand over sets HANDOVER = {queue, owner, token, row}; the first node
  its step makes ready now on that queue starts at once under `token` (flow/_start-one),
  its start row goes in HANDOVER.row, and nothing is queued for it. The token is the
  completed attempt's token passed through handed_token, so the stalled sweep can find a
  node started this way when the completing worker died before its queue step held it
  (flow/stall.lua).
]]
local HANDOVER -- @per-call
local start_one  -- defined in flow/_start-one

-- The token of the attempt a completion under `token` hands over to (kflow.store.types,
-- handed_token, computes the same).
local function handed_token(token)
  return string.sub(redis.sha1hex(token), 1, 16)
end

-- Put `node` on the flow's ready set: state ready (due <= now) or delayed (due > now).
-- Appends {node, queue, rank, due or 0} to `out` for the engine's queue step. A node made
-- ready on the queue of a completion that hands over starts instead (HANDOVER).
local function schedule(node, old, due, now, out, spec)
  spec = spec or spec_of(node)
  if due <= now and HANDOVER and not HANDOVER.row and spec[S_QUEUE] == HANDOVER.queue then
    HANDOVER.row = start_one(node, old, HANDOVER.token, HANDOVER.owner, 0, true)
    return
  end
  if due > now then
    set_state(node, old, 'delayed')
    redis.call('ZADD', K_READY, ms_text(due), node)
    out[#out + 1] = {node, spec[S_QUEUE], rank_of(spec), due}
  else
    set_state(node, old, 'ready')
    redis.call('ZADD', K_READY, ms_text(now), node)
    out[#out + 1] = {node, spec[S_QUEUE], rank_of(spec), 0}
  end
end

local child_settled  -- defined below: a map node's completion settles its parents

-- A map node's item record, {items = n, added = k}, or nil before its expansion began.
local function map_record(node)
  local raw = redis.call('HGET', K_PROGRESS, node)
  if raw then return cjson.decode(raw) end
  return nil
end

-- Work the engine does outside Lua: the node waits in `state` on the ready set (where
-- reconcile_flow finds it after a crash), and the step's reply names it in `list`.
local function to_engine(node, old, state, list, now)
  set_state(node, old, state)
  redis.call('ZADD', K_READY, ms_text(now), node)
  list[#list + 1] = node
end

-- A map node is ready to add its items: the engine expands it (flow/expand.lua).
local function begin_map(node, old, now) to_engine(node, old, 'expanding', EXPAND, now) end

-- A node whose condition is to be judged: the engine evaluates it (flow/decide.lua).
local function begin_decide(node, old, now) to_engine(node, old, 'deciding', DECIDE, now) end

-- `node` settled without failing (completed, or skipped): each parent has one dependency
-- less, a root is a root done, and a running flow may have succeeded.
local function settle_parents(node, now, out)
  local parents = parents_of(node)
  for _, p in ipairs(parents) do child_settled(p, now, out) end
  if #parents == 0 then root_done() end
  if flow_phase() == 'Running' then maybe_succeed(now) end
end

-- Every item of a map node settled: the map node completes (its value is its items').
local function complete_map(node, now, out)
  redis.call('HDEL', K_PENDING, node)
  redis.call('ZREM', K_READY, node)
  set_state(node, redis.call('HGET', K_STATE, node), 'completed')
  emit('completed', node)
  settle_parents(node, now, out)
end

-- A waiting parent whose dependencies are met: its condition is judged first; then a map
-- node whose items were all added and settled completes, one whose children (its from
-- node) are done begins adding its items; any other node is scheduled (start delay honoured).
local function unlock(node, now, out)
  local spec = spec_of(node)
  redis.call('HDEL', K_PENDING, node)
  if condition_to_judge(node, spec) then
    begin_decide(node, 'waiting-children', now)
    return
  end
  if map_source(spec) then
    local record = map_record(node)
    if record and record.added >= record.items then
      complete_map(node, now, out)
    else
      begin_map(node, 'waiting-children', now)
    end
    return
  end
  schedule(node, 'waiting-children', now + spec[S_START_DELAY], now, out, spec)
end

-- One dependency of a waiting parent is settled (completed, ignored or removed), or `n` of
-- them (a batch's completions, flow/_complete). A map node still adding items counts its
-- settled items without unlocking (flow/expand.lua does).
child_settled = function(parent, now, out, n)
  local st = redis.call('HGET', K_STATE, parent)
  if st == 'waiting-children' then
    if redis.call('HINCRBY', K_PENDING, parent, int_text(-(n or 1))) <= 0 then
      unlock(parent, now, out)
    end
  elseif st == 'expanding' then
    redis.call('HINCRBY', K_PENDING, parent, int_text(-(n or 1)))
  end
end
