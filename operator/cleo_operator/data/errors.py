"""Errors of the data layer, each with a machine ``reason`` for status conditions.

Why a hierarchy of its own: the reconcilers turn these into conditions
(``reason`` -> ``condition.reason``, ``str(error)`` -> ``condition.message``) and decide
whether to retry (``retryable``) without knowing anything about psycopg. The messages
say what was wrong, where and what to do; they never hold a password, because they
end up in status, events and logs. psycopg's own messages (which never hold the
password either) are passed through :func:`redact` anyway, as a second line of defence
(the one redactor of :mod:`cleo_operator.core.redaction`).
"""

from __future__ import annotations

from cleo_operator.core.errors import CleoError
from cleo_operator.core.redaction import redact

__all__ = [
    "AuthenticationFailed",
    "DataError",
    "InvalidDatabaseSettings",
    "InvalidTenantName",
    "NameCollision",
    "ObjectsStillDepend",
    "PermissionDenied",
    "PromotionFailed",
    "QueryFailed",
    "ServerNotVerified",
    "SiteBusy",
    "SiteConfigError",
    "SiteUnavailable",
    "TenantDatabaseMissing",
    "UnknownSite",
    "redact",
]


class DataError(CleoError, reason="DatabaseError"):
    """Base of the data layer's errors."""

    def __init__(self, message: str, *, site: str | None = None) -> None:
        super().__init__(message)
        self.site = site
        """Name of the site the error is about, if any."""


class SiteConfigError(DataError, ValueError, reason="InvalidSiteConfig", retryable=False):
    """The operator's site configuration is invalid; the message names the field path."""


class UnknownSite(DataError, retryable=False):
    """A tenant names a site the operator's site configuration does not define."""


class InvalidTenantName(DataError, ValueError, retryable=False):
    """A tenant name cannot be turned into a PostgreSQL database or role name."""


class InvalidDatabaseSettings(DataError, ValueError, retryable=False):
    """A requested setting (password, connection limit) cannot be applied as given."""


class SiteUnavailable(DataError):
    """The site cannot be reached (down, blackholed, refusing) or its circuit is open."""


class ServerNotVerified(SiteUnavailable):
    """TLS to the site failed: its certificate is not signed by the site's CA, names another
    host, or the CA to check it with is missing. The admin password was not sent."""


class SiteBusy(SiteUnavailable):
    """The site answers, but every pooled admin connection to it is in use."""


class AuthenticationFailed(DataError, retryable=False):
    """The server rejected the credentials (admin or tenant) or has no rule for them."""


class PermissionDenied(DataError, retryable=False):
    """Authenticated, but not allowed (no CONNECT on the database, missing privilege)."""


class TenantDatabaseMissing(DataError):
    """The tenant's database or role does not exist on the site."""


class NameCollision(DataError, retryable=False):
    """A database or role with the tenant's name exists but was not made by the operator."""


class ObjectsStillDepend(DataError, reason="RoleInUse", retryable=False):
    """The tenant's role cannot be dropped: objects elsewhere on the site depend on it."""


class PromotionFailed(DataError):
    """A standby did not finish promotion in time, or could not be promoted."""


class QueryFailed(DataError, reason="DatabaseError"):
    """A statement failed for a reason not covered by a more specific error."""
