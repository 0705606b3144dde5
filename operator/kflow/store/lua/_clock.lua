--[[ Include: the server clock in milliseconds (scripts are replicated by effects, so TIME is safe).
  Read once per script call: a call is atomic, so every step in it happens at one instant
  (and a batch of 100 nodes costs one TIME, not one per state change). ]]
local clock_now -- @per-call
local function now_ms()
  if not clock_now then
    local t = redis.call('TIME')
    clock_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock_now
end

-- The same as text, formatted once per call (a batch writes it into each node's times).
local clock_text -- @per-call
local function now_text()
  if not clock_text then clock_text = string.format('%d', now_ms()) end
  return clock_text
end

-- A time in ms as text, for a command's argument: the call's own instant from the text
-- formatted once, any other by "%d" (Redis would format a Lua number with "%.17g").
local function ms_text(t)
  if t == clock_now then return now_text() end
  return string.format('%d', t)
end
