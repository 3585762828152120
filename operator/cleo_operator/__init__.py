"""cleo-operator: runs CleoAI tenants on Kubernetes.

The package is layered (see docs/architecture.md and `.importlinter`): handlers call
reconcile, which calls render, kube, crypto, data, backup and failover, which all
stand on api. Only `handlers` imports Kopf.
"""

__version__ = "0.1.0"
