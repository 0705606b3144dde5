-- Argo CD health of a kflow Queue (kflow.dev/v1alpha1, kind Queue).
-- Input: obj, the Queue as the API server returns it.
-- Returns {status, message}:
--   Progressing  no status yet, or the operator has not checked this generation
--   Healthy      Ready=True: the spec is valid and passes the pod policy (message: its depth)
--   Degraded     Stalled=True or Valid=False: its nodes cannot run (message: why)
-- A status written before the operator had Ready/Stalled is read from its Valid condition.
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
  return {status = "Progressing", message = "the kflow operator has not checked generation "
    .. generation .. " yet"}
end

local stalled = condition(status.conditions, "Stalled")
local valid = condition(status.conditions, "Valid")
local broken = nil
if stalled ~= nil and stalled.status == "True" then
  broken = stalled
elseif valid ~= nil and valid.status == "False" then
  broken = valid
end
if broken ~= nil then
  local why = broken.message
  if why == nil or why == "" then
    why = broken.reason or "invalid"
  end
  return {status = "Degraded", message = why}
end

local ready = condition(status.conditions, "Ready")
if (ready ~= nil and ready.status == "True") or (ready == nil and valid ~= nil) then
  return {status = "Healthy", message = (status.waiting or 0) .. " waiting, "
    .. (status.active or 0) .. " active, " .. (status.delayed or 0) .. " delayed"}
end
return {status = "Progressing", message = "waiting for the kflow operator to check it"}
