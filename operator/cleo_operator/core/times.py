"""The one reader of RFC 3339 times, and its writers.

Kubernetes writes times in UTC with a ``Z`` and whole seconds (``2024-05-01T12:00:00Z``);
failover steps need milliseconds; manifests and keyrings keep the full precision they were
written with. Every time the operator writes or reads goes through here, so a time without
a zone is refused in one place and never compared with an aware one somewhere else.
"""

from __future__ import annotations

import datetime

__all__ = ["parse_rfc3339", "read_rfc3339", "rfc3339", "rfc3339_ms", "rfc3339_precise"]


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        raise ValueError("a timestamp needs a time zone (use datetime.now(timezone.utc))")
    return moment.astimezone(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    """As Kubernetes writes times: ``2024-05-01T12:00:00Z``."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(moment: datetime.datetime) -> str:
    """With milliseconds: ``2025-01-01T12:00:00.123Z`` (failover steps measure in them)."""
    utc = _utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def rfc3339_precise(moment: datetime.datetime) -> str:
    """With microseconds when there are any: ``2025-01-01T12:00:00.123456Z``."""
    return _utc(moment).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime.datetime:
    """An RFC 3339 time in UTC; ValueError when it is malformed or has no time zone."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return moment.astimezone(datetime.UTC)


def read_rfc3339(value: object) -> datetime.datetime | None:
    """A time as status or an annotation holds it; None when absent, malformed or zoneless."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None
