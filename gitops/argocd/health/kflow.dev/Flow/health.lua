-- Argo CD health of a kflow Flow (kflow.dev/v1alpha1, kind Flow).
-- Input: obj, the Flow as the API server returns it.
-- Returns {status, message}:
--   Progressing  no status yet, the operator has not handled this generation, or a run goes
--                on (Pending, Running, or a changed spec queued behind the running run)
--   Healthy      the run succeeded (Ready=True)
--   Degraded     Stalled=True: the run failed or was cancelled, the spec is invalid, the
--                template is missing, or Redis lost the flow's state
--   Suspended    phase Suspended (spec.suspend: true)
-- The Ready/Reconciling/Stalled conditions decide; a status written before the operator had
-- them is read from its phase and its Failed/StateLost conditions.
-- Argo CD opens only the base, table and package libraries here: no string.* calls.

local function condition(conditions, ctype)
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function holds(c)
  return c ~= nil and c.status == "True"
end

-- The condition's message, else its reason.
local function told(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or ""
end

local status = obj.status
if status == nil or status.conditions == nil then
  return {status = "Progressing", message = "waiting for the kflow operator"}
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  return {status = "Progressing", message = "the kflow operator has not handled generation "
    .. generation .. " yet (the status is about " .. status.observedGeneration .. ")"}
end

local conditions = status.conditions
local phase = status.phase or "Pending"
local progress = ""
if status.progress ~= nil then
  progress = ", " .. status.progress .. " nodes done"
end

local stalled = condition(conditions, "Stalled")
if holds(stalled) then
  local why = phase
  if stalled.reason ~= nil and stalled.reason ~= phase then
    why = phase .. " (" .. stalled.reason .. ")"
  end
  return {status = "Degraded", message = why .. ": " .. told(stalled)}
end
for _, ctype in ipairs({"StateLost", "Failed"}) do
  local c = condition(conditions, ctype)
  if holds(c) then
    return {status = "Degraded", message = phase .. ": " .. told(c)}
  end
end
if phase == "Failed" or phase == "Cancelled" then
  return {status = "Degraded", message = phase .. progress}
end
if phase == "Suspended" then
  return {status = "Suspended", message = "Suspended" .. progress
    .. ": no node starts until spec.suspend is false (kubectl kflow resume)"}
end
local ready = condition(conditions, "Ready")
if holds(ready) or (ready == nil and phase == "Succeeded") then
  return {status = "Healthy", message = phase .. progress}
end
-- A changed spec waiting for the run to finish (changePolicy: Queue) says so.
local reconciling = condition(conditions, "Reconciling")
if holds(reconciling) and reconciling.reason == "ChangeQueued" then
  return {status = "Progressing", message = phase .. progress .. "; " .. told(reconciling)}
end
return {status = "Progressing", message = phase .. progress}
