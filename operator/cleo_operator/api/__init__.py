"""The API of cleo-operator: pydantic models of every resource's spec and status.

These models are the single source of truth; the CRD YAML is generated from them
(`crdgen`). Modules: `base` (shared types, conditions), `schema` (validation declared
once for pydantic and the CRD), `errors` (`SpecError`), `resource` (a kind's names and
printer columns), one module per kind (`tenant`, `backup`, `failover`), `kinds` (all of
them) and `objects` (raw Kubernetes JSON types shared by render and kube).
"""
