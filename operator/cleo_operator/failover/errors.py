"""Errors of the failover procedure, each with a machine ``reason`` and a message for people.

Why one class with a reason rather than a class per reason: a step can stop for many
reasons (the target is not a standby, the standby is too far behind, the workload cannot
be scaled), and each ends up in the same places: the failed step's message, the
``Succeeded`` condition's reason and the ``cleo_operator_failovers_total`` counter. What
the reconciler has to decide from an error is only *whether trying again may help*
(``retryable``): a site that is briefly unreachable may answer in a second, a standby that
belongs to another primary never will.

Messages say what was wrong, where (site, object, field) and what to do. They never carry
secret material: no passwords, no DATABASE_URL. Errors of the data layer are already
redacted; the Kubernetes API's messages about Secrets are not passed on at all.
"""

from __future__ import annotations

from cleo_operator.core.errors import CleoError

__all__ = ["FailoverError"]


class FailoverError(CleoError):
    """A step cannot go on; the reason (``TargetUnhealthy``, ``LagTooHigh``...) is per error."""

    def __init__(self, message: str, *, reason: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
