-- Argo CD health of a kflow CronFlow (kflow.dev/v1alpha1, kind CronFlow).
-- Input: obj, the CronFlow as the API server returns it.
-- Returns {status, message}:
--   Progressing  no status yet, or the operator has not handled this generation
--   Degraded     Stalled=True (the schedule or the flow spec cannot run), or the newest run
--                (status.lastFlow) failed: the message names it
--   Suspended    spec.suspend: true (no new runs)
--   Healthy      scheduled (message: when the next run starts, how many run now)
-- Argo CD opens only the base, table and package libraries here: no string.* calls.

local function condition(conditions, ctype)
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.conditions == nil then
  return {status = "Progressing", message = "waiting for the kflow operator"}
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  return {status = "Progressing", message = "the kflow operator has not handled generation "
    .. generation .. " yet"}
end

local stalled = condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  local why = stalled.message
  if why == nil or why == "" then
    why = stalled.reason or "Stalled"
  end
  return {status = "Degraded", message = why}
end

local last = ""
local lastFlow = status.lastFlow
if lastFlow ~= nil and lastFlow.name ~= nil then
  last = "; last run " .. lastFlow.name .. ": " .. (lastFlow.phase or "unknown")
end
if obj.spec ~= nil and obj.spec.suspend == true then
  return {status = "Suspended", message = "suspended: no new runs" .. last}
end
if lastFlow ~= nil and lastFlow.phase == "Failed" then
  return {status = "Degraded", message = "the newest run, Flow " .. (lastFlow.name or "?")
    .. ", failed (kubectl kflow get " .. (lastFlow.name or "NAME") .. " shows why)"}
end

local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  local message = "scheduled"
  if status.nextScheduleTime ~= nil then
    message = "next run at " .. status.nextScheduleTime
  end
  local active = 0
  if status.active ~= nil then
    active = #status.active
  end
  return {status = "Healthy", message = message .. ", " .. active .. " running" .. last}
end
return {status = "Progressing", message = "waiting for the kflow operator to schedule it"}
