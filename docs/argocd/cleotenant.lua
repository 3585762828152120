-- Argo CD health check of a CleoTenant: resource.customizations.health.cleoai.io_CleoTenant
-- (docs/observability.md, Argo CD). Healthy only when cleo-operator has seen the current
-- spec and says Ready, which it never says while something the tenant needs does not work.
local hs = {status = "Progressing", message = "Waiting for cleo-operator to reconcile the tenant"}
local meta = obj.metadata or {}
if meta.deletionTimestamp ~= nil then
  hs.message = "Being deleted (spec.deletionPolicy decides what is kept)"
  return hs
end
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
local message = (ready ~= nil and ready.message) or ("Phase " .. tostring(status.phase))
if status.phase == "Paused" then
  hs.status = "Suspended"
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
elseif status.phase == "Degraded" or status.phase == "Failed" or status.phase == "Invalid"
    or (ready ~= nil and ready.reason == "InvalidSpec") then
  hs.status = "Degraded"
end
hs.message = message
return hs
