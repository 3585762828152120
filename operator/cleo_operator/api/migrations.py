"""The schema migrations of a tenant's workload: what the spec asks, what status records.

Why a module of its own: the tenant's models (`api.tenant`) are already long, and what a
migration is (a command run in the workload's image, keyed by what it runs) changes for
reasons of its own. The operator's side is `reconcile.migrations` (the part) and
`render.migrations` (the Job and its NetworkPolicy).
"""

from __future__ import annotations

import datetime
from typing import Annotated, Final, Literal

from pydantic import Field, model_validator

from cleo_operator.api.base import (
    PositiveDuration,
    SpecModel,
    StatusModel,
    Timestamp,
    parse_duration,
)
from cleo_operator.api.errors import RuleViolation
from cleo_operator.api.schema import Rules, cel

__all__ = [
    "MIGRATION_TIMEOUT_MAX",
    "MigrationAttempt",
    "MigrationPhase",
    "MigrationsSpec",
    "MigrationsStatus",
]

MIGRATION_TIMEOUT_MAX: Final = datetime.timedelta(hours=24)
"""The longest a migration Job may run (its activeDeadlineSeconds)."""


class MigrationsSpec(SpecModel):
    """Schema migrations run as a Job before the Deployment rolls to a new image.

    The Job runs ``command`` with ``args`` in the workload's image, with the tenant's
    database credentials; the Deployment keeps the image last migrated until it succeeds.
    """

    command: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=4096)]],
        Field(min_length=1, max_length=32),
    ] = Field(
        description="The migration's command (the container's entrypoint), e.g. "
        '["alembic", "upgrade", "head"].'
    )
    args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = Field(
        default_factory=list, description="Arguments of the command."
    )
    timeout: Annotated[
        PositiveDuration,
        Rules(
            cel(
                "self.matches('d') ? self.matches('^0*1d(0+h)?(0+m)?(0+s)?$') "
                ": duration(self) <= duration('24h')",
                "spec.workload.migrations.timeout must be at most 24h (1d)",
            )
        ),
    ] = Field(
        default="10m",
        description="How long the migration may run, e.g. 10m (at most 24h); then it failed.",
    )
    backoff_limit: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Retries of a failing migration pod in one attempt (the Job's backoffLimit).",
    )
    backup_first: bool = Field(
        default=False,
        description=(
            "Take a one-off backup from each scheduled CleoBackup of the tenant, and wait for "
            "it to succeed, before the migration runs."
        ),
    )

    @model_validator(mode="after")
    def _timeout_bounded(self) -> MigrationsSpec:
        if parse_duration(self.timeout) > MIGRATION_TIMEOUT_MAX:
            raise RuleViolation(("timeout",), "must be at most 24h (1d)")
        return self


MigrationPhase = Literal["BackingUp", "Creating", "Running", "Succeeded", "Failed"]


class MigrationAttempt(StatusModel):
    """The newest migration the operator started (or is starting)."""

    key: str = Field(max_length=64, description="Hash of the image, command and args it runs.")
    image: str = Field(max_length=512, description="The image it runs.")
    phase: MigrationPhase = Field(
        description="BackingUp, Creating (its Job is being made), Running, Succeeded or Failed."
    )
    job_name: str | None = Field(
        default=None,
        max_length=63,
        description="Its Job (recorded before the Job is made, so that a Job made but not "
        "recorded is found again).",
    )
    job_uid: str | None = Field(
        default=None,
        max_length=64,
        description="The uid of its Job: a Job of that name with another uid is not it.",
    )
    nonce: str | None = Field(
        default=None,
        max_length=64,
        description="A random value recorded before anything of this attempt is made and "
        "put on its Job and one-off backups (annotation cleoai.io/migration-nonce): only "
        "objects that carry it exactly are taken for the attempt's own.",
    )
    digest: str | None = Field(
        default=None,
        max_length=600,
        description="Its image at the digest the kubelet reported its migration container "
        "runs (repository@sha256:...), recorded while it runs: the Deployment's image when "
        "it succeeds and no ended container reports one.",
    )
    refusals: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="How many creates of this migration the API server refused in a row "
        "(JobRefused, BackupRefused): the back-off of the automatic retry.",
    )
    retry_at: Timestamp | None = Field(
        default=None,
        description="When a refused attempt is retried automatically (exponential back-off).",
    )
    backups: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=16,
        description="The one-off CleoBackups taken first (backupFirst), as name/uid (name/ "
        "while it is being made: names are recorded before the one-offs are).",
    )
    started: Timestamp | None = Field(default=None, description="When it started.")
    finished: Timestamp | None = Field(default=None, description="When it ended.")
    reason: str | None = Field(
        default=None, max_length=128, description="Why it failed, as one CamelCase word."
    )
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="What failed and the last lines of the migration's log (redacted).",
    )


class MigrationsStatus(StatusModel):
    """Which schema the tenant's database has, and the migration in flight."""

    key: str | None = Field(
        default=None, max_length=64, description="Hash of what was last migrated successfully."
    )
    image: str | None = Field(
        default=None,
        max_length=600,
        description="The image the Deployment runs until the next migration succeeds: the "
        "last migrated, at the digest its migration ran when the kubelet reported one "
        "(repository@sha256:...); before the first migration, the image the operator's "
        "Deployment ran when migrations were turned on.",
    )
    revision: str | None = Field(
        default=None,
        max_length=64,
        description="The schema revision the last successful migration reported "
        "(its termination message's last line, revision=<id>).",
    )
    last_succeeded: Timestamp | None = Field(
        default=None, description="When the last migration succeeded."
    )
    attempt: MigrationAttempt | None = Field(default=None, description="The newest migration.")
    retry_request: str | None = Field(
        default=None,
        max_length=253,
        description="The last value of the annotation cleoai.io/retry-migrations handled.",
    )
