"""``spec.database``: the tenant's PostgreSQL database, its role and its pooler.

A module of its own so that the tenant's model stays readable (api/tenant.py imports and
re-exports `DatabaseSpec`). The rules that tie the pooler to the database live here, with
the fields they read: the pooler needs the database, and its server connections
(``poolSize`` per replica) must fit the role's ``connectionLimit``.
"""

from __future__ import annotations

from typing import Final

from pydantic import ConfigDict, Field, model_validator

from cleo_operator.api.base import DnsLabel, PositiveDuration, SpecModel
from cleo_operator.api.errors import RuleViolation
from cleo_operator.api.pooler import (
    DEFAULT_POOL_SIZE,
    DEFAULT_POOLER_REPLICAS,
    PoolerSpec,
    pool_fits,
)
from cleo_operator.api.schema import cel, validations

__all__ = ["DEFAULT_SITE", "DatabaseSpec"]

DEFAULT_SITE: Final = "default"
"""The PostgreSQL site of a tenant's database when spec.database.site is unset."""


class DatabaseSpec(SpecModel):
    """The tenant's PostgreSQL database and role (the memory of CleoAI)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.pooler) || !has(self.pooler.enabled) || !self.pooler.enabled "
                "|| (has(self.enabled) && self.enabled)",
                "spec.database.pooler.enabled needs spec.database.enabled: the pooler "
                "connects to the tenant's database",
                field_path=".pooler.enabled",
            ),
            cel(
                "!has(self.pooler) || !has(self.pooler.enabled) || !self.pooler.enabled "
                "|| !has(self.connectionLimit) || self.connectionLimit == -1 "
                f"|| (has(self.pooler.poolSize) ? self.pooler.poolSize : {DEFAULT_POOL_SIZE}) "
                f"* (has(self.pooler.replicas) ? self.pooler.replicas : {DEFAULT_POOLER_REPLICAS}) "
                "<= self.connectionLimit",
                "spec.database.pooler.poolSize x spec.database.pooler.replicas must not "
                "exceed spec.database.connectionLimit (unless it is -1): the pooler's server "
                "connections count against the role's limit",
                field_path=".pooler.poolSize",
            ),
        )
    )

    enabled: bool = Field(default=False, description="Provision a database for the tenant.")
    site: DnsLabel = Field(
        default=DEFAULT_SITE,
        description="The PostgreSQL site (as configured in the operator) that holds the primary.",
    )
    connection_limit: int = Field(
        default=20,
        ge=-1,
        le=1000,
        description="Most concurrent connections of the tenant's role (-1: no limit).",
    )
    password_rotation_period: PositiveDuration | None = Field(
        default=None,
        description="Change the role's password this often, e.g. 30d; unset, never.",
    )
    pooler: PoolerSpec = Field(
        default_factory=PoolerSpec,
        description="A PgBouncer pool in front of the database; unset, no pooler.",
    )

    @model_validator(mode="after")
    def _pooler_rules(self) -> DatabaseSpec:
        # "pooler.enabled needs enabled" is checked with the tenant's other cross-field
        # rules, so that it is reported beside them (a nested error would hide them).
        pooler = self.pooler
        if pooler.enabled and not pool_fits(
            pool_size=pooler.pool_size,
            replicas=pooler.replicas,
            connection_limit=self.connection_limit,
        ):
            raise RuleViolation(
                ("pooler", "poolSize"),
                f"poolSize x replicas ({pooler.pool_size} x {pooler.replicas}) must not exceed "
                f"spec.database.connectionLimit ({self.connection_limit}) unless that is -1: "
                "the pooler's server connections count against the role's limit",
            )
        return self
