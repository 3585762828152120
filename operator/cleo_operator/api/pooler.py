"""``spec.database.pooler``: a PgBouncer pool between the tenant's pods and its database.

Why it exists: every CleoAI pod opens its own connections, so 40 pods of N tenants exhaust a
shared server's ``max_connections`` long before CPU runs out. A pooler per tenant holds a
fixed number of server connections (``poolSize`` per replica) and multiplexes up to
``maxClientConnections`` client connections onto them.

Choices, and why:

- ``poolSize`` is per pooler replica (PgBouncer's ``default_pool_size``): each replica is
  its own process with its own pool, so the server sees ``poolSize x replicas``
  connections at most. That product must fit ``spec.database.connectionLimit`` (the role's
  own limit) or the pooler's logins fail with "too many connections for role"; CEL and
  `validate_pool_fits` refuse it at apply.
- ``replicas`` defaults to 2, spread over nodes (preferred anti-affinity) with a
  PodDisruptionBudget of one: the pooler is on the path of every query, so a node drain or
  a single crash must not cut the tenant off. One replica is allowed for small tenants.
- ``mode`` defaults to ``transaction``, the mode that actually saves server connections;
  ``session`` is there for applications that use session state (advisory locks,
  ``SET`` without ``LOCAL``, server-side prepared statements with PgBouncer < 1.21).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from cleo_operator.api.base import ResourceRequirements, SpecModel

__all__ = [
    "DEFAULT_POOLER_REPLICAS",
    "DEFAULT_POOL_SIZE",
    "PoolMode",
    "PoolerSpec",
    "pool_fits",
]

DEFAULT_POOL_SIZE: Final = 10
DEFAULT_POOLER_REPLICAS: Final = 2

PoolMode = Literal["transaction", "session"]


class PoolerSpec(SpecModel):
    """A PgBouncer Deployment and Service in the tenant's namespace, in front of its database."""

    enabled: bool = Field(
        default=False,
        description=(
            "Run a PgBouncer pool and point the workload's DATABASE_URL at it (needs "
            "spec.database.enabled)."
        ),
    )
    mode: PoolMode = Field(
        default="transaction",
        description=(
            "transaction: a server connection per transaction (saves the most connections); "
            "session: per client session (for session state such as advisory locks)."
        ),
    )
    pool_size: int = Field(
        default=DEFAULT_POOL_SIZE,
        ge=1,
        le=1000,
        description=(
            "Server connections each pooler replica keeps to PostgreSQL at most; "
            "poolSize x replicas must fit spec.database.connectionLimit."
        ),
    )
    max_client_connections: int = Field(
        default=1000,
        ge=1,
        le=100000,
        description="Client connections each pooler replica accepts at most.",
    )
    replicas: int = Field(
        default=DEFAULT_POOLER_REPLICAS,
        ge=1,
        le=10,
        description=(
            "PgBouncer pods; spread over nodes, and with 2 or more a PodDisruptionBudget "
            "keeps one up during drains."
        ),
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description=(
            "CPU and memory of the PgBouncer container; unset, 50m CPU and 32Mi memory "
            "requested, 128Mi memory limit."
        ),
    )


def pool_fits(*, pool_size: int, replicas: int, connection_limit: int) -> bool:
    """Whether the pool's server connections fit the role's limit (-1: no limit)."""
    return connection_limit == -1 or pool_size * replicas <= connection_limit
