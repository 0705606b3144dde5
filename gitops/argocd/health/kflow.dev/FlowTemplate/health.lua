-- Argo CD health of a kflow FlowTemplate (kflow.dev/v1alpha1, kind FlowTemplate).
-- Input: obj, the FlowTemplate as the API server returns it.
-- Returns {status, message}:
--   Progressing  no status yet, or the operator has not checked this generation
--   Healthy      Ready=True: the template is valid; Flows may use it
--   Degraded     Stalled=True or Valid=False: Flows made from it are refused (message: why)
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
if ready ~= nil and ready.status == "True" then
  local message = ready.message
  if message == nil or message == "" then
    message = "valid"
  end
  return {status = "Healthy", message = message}
end
return {status = "Progressing", message = "waiting for the kflow operator to check it"}
