"""The failover procedure as explicit, timed, resumable steps.

- ``steps``: the steps of each kind (Failover, Switchover, Drill), their records on status,
  the RTO/RPO verdict (pure).
- ``procedure``: what each step does, idempotently, and the rollback before promotion.
- ``probe``, ``fencing``, ``workload``: the servers, the fence, the tenant's Deployment and
  credentials Secret.
- ``tenant``: the annotations a failover leaves on the CleoTenant (its primary's site now,
  the failover lock), which the tenant's database part must read.
- ``automatic``: noticing a lost primary and creating the CleoFailover for it.
- ``drill``: restoring the latest verified backup, for drills.
- ``samples``, ``metrics``, ``faults``: lag samples (the RPO of a lost primary), Prometheus
  metrics, fault points for crash tests.

The reconcile that drives a CleoFailover is ``cleo_operator.reconcile.failover``; the DR plan
and runbooks are ``docs/failover.md``.
"""
