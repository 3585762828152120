"""The tenant database password's policy: when it rotates, what makes a stored one unusable.

Pure: no PostgreSQL, no Kubernetes. The decisions here are what an operator tunes
(rotation period, on-demand requests, what counts as a password the operator made), so
they live apart from the Secret's layout (`database_secret`) and from the work on the
sites (`tenant_databases`), and are unit-tested alone.

The role only ever gets passwords the operator generated (``secrets.token_urlsafe``): a
stored password that is not of the form ``token_urlsafe(32)`` makes
(`is_operator_password`: a SCRAM or MD5 verifier planted as a "password" would be read as
one by PostgreSQL and PgBouncer) or no longer matches the fingerprint
recorded beside it was not made by the operator, and is replaced by a rotation.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Final

from cleo_operator.api.base import parse_duration
from cleo_operator.data.scram import is_operator_password

ROTATE_ANNOTATION: Final = "cleoai.io/rotate-database-password"
"""Set it on the CleoTenant to any new value to rotate the password now."""

MIN_PASSWORD_LENGTH: Final = 32
"""Shorter passwords in the Secret were not made by the operator: they are replaced."""

_PASSWORD_BYTES: Final = 32  # token_urlsafe(32): 43 characters, 256 random bits
FINGERPRINT_CONTEXT: Final = b"cleo-operator/database-password/v1/"
"""Domain separation of the HMACs keyed with the password (never change it: every
fingerprint recorded in a Secret would stop matching, and every password would rotate)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredPassword:
    """The password as the credentials Secret holds it, once checked."""

    password: str = dataclasses.field(repr=False)
    fingerprint: str
    rotated_at: datetime.datetime | None
    """When the operator made the password (None: the Secret does not say)."""
    rotation_request: str | None
    """The last on-demand rotation request handled (the annotation's value)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rotation:
    """A rotation that is due: why (for an Event, never secret material), when, and the
    on-demand request it handles (recorded with the new password)."""

    why: str
    at: datetime.datetime
    request: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PasswordChoice:
    """The password the role is converged to, and the rotation that made it (None: kept)."""

    password: str = dataclasses.field(repr=False)
    rotation: Rotation | None


def new_password() -> str:
    """A fresh tenant password: 256 random bits, URL-safe (no quoting in DATABASE_URL)."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def password_fingerprint(*, tenant: str, password: str) -> str:
    """An HMAC keyed with the password: equal for equal passwords, reveals nothing of them.

    Salted with the tenant's name, so equal fingerprints say nothing across tenants.
    """
    digest = hmac.new(password.encode(), FINGERPRINT_CONTEXT + tenant.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def unusable_password(*, tenant: str, password: str, recorded_fingerprint: str) -> str | None:
    """Why a stored password must be replaced, or None when the operator made it."""
    fingerprint = password_fingerprint(tenant=tenant, password=password)
    if not hmac.compare_digest(fingerprint, recorded_fingerprint):
        return "the password in the credentials Secret was changed by hand"
    if not is_operator_password(password):
        return "the password in the credentials Secret is not one the operator made"
    return None


def rotation_due(
    stored: StoredPassword | None,
    missing_why: str,
    *,
    period: str | None,
    request: str | None,
    now: datetime.datetime,
) -> Rotation | None:
    """The rotation due now, or None to keep the stored password.

    `missing_why` says why there is no usable stored password (used when `stored` is None);
    `period` is ``passwordRotationPeriod``; `request` the rotation annotation's value.
    """
    if stored is None:
        return Rotation(why=missing_why, at=now, request=request)
    if request and request != stored.rotation_request:
        return Rotation(
            why=f"requested with {ROTATE_ANNOTATION}={request!r}", at=now, request=request
        )
    if period:
        if stored.rotated_at is None:
            return Rotation(
                why="the Secret does not say when its password was made",
                at=now,
                request=stored.rotation_request,
            )
        if now >= stored.rotated_at + parse_duration(period):
            return Rotation(
                why=f"the password is older than passwordRotationPeriod {period}",
                at=now,
                request=stored.rotation_request,
            )
    return None


def choose_password(
    stored: StoredPassword | None,
    missing_why: str,
    *,
    period: str | None,
    request: str | None,
    now: datetime.datetime,
) -> PasswordChoice:
    """Keep the stored password unless a rotation is due; a rotation gets a fresh one."""
    rotation = rotation_due(stored, missing_why, period=period, request=request, now=now)
    if stored is not None and rotation is None:
        return PasswordChoice(password=stored.password, rotation=None)
    return PasswordChoice(password=new_password(), rotation=rotation)


def recorded_after(
    choice: PasswordChoice, stored: StoredPassword | None, *, tenant: str
) -> StoredPassword:
    """What the Secret records once the role has `choice`'s password.

    A rotation records its time and the request it handled; a kept password keeps the
    record it had (so a status write that failed cannot cause a second rotation).
    """
    rotation = choice.rotation
    if rotation is None:
        if stored is None:
            raise ValueError("a password is kept only when the Secret held a usable one")
        return stored
    return StoredPassword(
        password=choice.password,
        fingerprint=password_fingerprint(tenant=tenant, password=choice.password),
        rotated_at=rotation.at,
        rotation_request=rotation.request,
    )


def seconds_until_rotation(
    rotated_at: datetime.datetime | None, period: str | None, now: datetime.datetime
) -> float | None:
    """How long until the scheduled rotation (at least a second); None: none scheduled."""
    if not period or rotated_at is None:
        return None
    due = rotated_at + parse_duration(period)
    return max(1.0, (due - now).total_seconds())


def rotation_request_pending(
    annotations: Mapping[str, str] | None, status_database: Mapping[str, object] | None
) -> bool:
    """Whether the tenant asks for a rotation not handled yet (for the event handler).

    Compares with ``status.database.passwordRotationRequest``, which `DatabasePart`
    reports once `TenantDatabaseStatus` has that field; until then any set annotation
    counts as pending and wakes the tenant (the reconcile is then a no-op).
    """
    wanted = ((annotations or {}).get(ROTATE_ANNOTATION) or "").strip()
    if not wanted:
        return False
    return (status_database or {}).get("passwordRotationRequest") != wanted
