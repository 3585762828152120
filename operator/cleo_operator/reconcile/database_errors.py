"""Failures of the tenant database part that do not come from the data layer.

They derive from `DataError` (and so from the error base) on purpose: the tenant database
turns every failure into its ``DatabaseReady`` condition the same way (``reason`` and a
message for people, ``retryable`` for when to look again), whether PostgreSQL, the
Kubernetes API or a bug caused it. Their messages never hold secret material: the
Kubernetes API's message is redacted of every form of the password, and an unexpected
exception is named by its type only.
"""

from __future__ import annotations

import logging

from cleo_operator.api.objects import ObjectRef
from cleo_operator.core.redaction import redact
from cleo_operator.data.errors import DataError
from cleo_operator.kube.client import KubeError

log = logging.getLogger(__name__)


class SecretWriteFailed(DataError):
    """The credentials Secret could not be written (its namespace going away, RBAC...)."""

    reason = "SecretWriteFailed"


class UnexpectedError(DataError):
    """A bug or an error nobody classified; the message names its type only."""

    reason = "InternalError"


def secret_write_failed(
    exc: KubeError, *, secret: ObjectRef, site: str, password: str
) -> SecretWriteFailed:
    """`exc` of writing the credentials `secret`, without the password in any form.

    The request carried it plainly, base64-encoded (``data``) and URL-quoted (in
    ``DATABASE_URL``); `redact` removes all three.
    """
    message = redact(exc.message, [password])[:500]
    return SecretWriteFailed(
        f"cannot write the credentials Secret {secret['namespace']}/{secret['name']}: "
        f"{exc.status} {exc.reason}: {message}. Is the namespace active, and may the "
        "operator write Secrets there?",
        site=site,
    )


def unexpected(exc: BaseException, *, doing: str) -> UnexpectedError:
    """An exception nobody classified, named by its type only (and logged so)."""
    # Only the type: the message comes from code that never checked it for secrets
    # (the plaintext password is in the same frames), so it goes nowhere.
    log.error("unexpected %s while %s", type(exc).__name__, doing)
    return UnexpectedError(
        f"unexpected {type(exc).__name__} while {doing}. This is a bug of cleo-operator; "
        "please report it with the operator's version."
    )
