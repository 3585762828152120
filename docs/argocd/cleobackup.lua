-- Argo CD health check of a CleoBackup: resource.customizations.health.cleoai.io_CleoBackup
-- (docs/observability.md, Argo CD). A scheduled backup is Healthy while it is scheduled and
-- its newest run did not fail; a one-off backup is Healthy once it succeeded.
local hs = {status = "Progressing", message = "Waiting for cleo-operator to set up the backup"}
local meta = obj.metadata or {}
local status = obj.status
if status == nil then
  return hs
end
if meta.generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < meta.generation) then
  hs.message = "Waiting for cleo-operator to observe generation " .. string.format("%d", meta.generation)
  return hs
end
local ready = nil
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  end
end
local phase = status.phase
hs.message = (ready ~= nil and ready.message) or ("Phase " .. tostring(phase))
if phase == "Failed" or phase == "Invalid" or (ready ~= nil and ready.status == "False" and phase ~= "Pending" and phase ~= "Running") then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
elseif phase == "Scheduled" or phase == "Succeeded" then
  hs.status = "Healthy"
end
return hs
