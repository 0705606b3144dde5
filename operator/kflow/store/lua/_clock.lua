--[[ Include: the server clock in milliseconds (scripts are replicated by effects, so TIME is safe). ]]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
