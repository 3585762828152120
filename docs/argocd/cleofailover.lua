-- Argo CD health check of a CleoFailover: resource.customizations.health.cleoai.io_CleoFailover
-- (docs/observability.md, Argo CD). A failover is an event: Progressing until it ends,
-- then Healthy if it succeeded and Degraded if it failed.
local hs = {status = "Progressing", message = "Waiting for cleo-operator to start the failover"}
local status = obj.status
if status == nil or status.phase == nil then
  return hs
end
local ready = nil
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Ready" or condition.type == "Succeeded" then
    ready = condition
  end
end
hs.message = (ready ~= nil and ready.message) or ("Phase " .. status.phase)
if status.phase == "Succeeded" then
  hs.status = "Healthy"
elseif status.phase == "Failed" then
  hs.status = "Degraded"
end
return hs
