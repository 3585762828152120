"""Replication lag sampled while the primary was healthy: the RPO estimate of a lost primary.

When a primary is gone, what it wrote and never sent is gone with it, and nothing can
count it any more. The best estimate is how far behind the standby was just before: with
asynchronous replication that lag *is* the data at risk. So whoever checks a primary's
health (the automatic failover, on each tenant reconcile) records the lag it sees here,
per site, and a failover of a lost primary reports the last sample (with its time) as
its estimated RPO. A sample is also stamped on each automatic CleoFailover
(``cleoai.io/lag-before-failover``), so it survives an operator restart.

An estimate that is unknown stays unknown (None), never zero.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from typing import Final

from cleo_operator.core.times import read_rfc3339, rfc3339_ms

__all__ = ["LAG_ANNOTATION", "LagSample", "LagSamples"]

LAG_ANNOTATION: Final = "cleoai.io/lag-before-failover"
"""On an automatic CleoFailover: the last lag sampled before the primary was lost (JSON)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LagSample:
    """How far the standbys of a primary were behind, at one moment."""

    site: str
    """The primary's site."""
    bytes: int | None
    """WAL not yet replayed by the furthest standby (None: unknown)."""
    seconds: float | None
    """Its replay delay in seconds (None: unknown)."""
    at: datetime.datetime
    """When it was sampled."""

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "site": self.site,
                "bytes": self.bytes,
                "seconds": self.seconds,
                "at": rfc3339_ms(self.at),
            },
            sort_keys=True,
        )

    @classmethod
    def from_annotation(cls, text: str | None) -> LagSample | None:
        """The sample of an annotation; None when absent or malformed."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            at = read_rfc3339(raw["at"])
            size, seconds = raw.get("bytes"), raw.get("seconds")
            if at is None or not isinstance(raw.get("site"), str):
                return None
            return cls(
                site=raw["site"],
                bytes=int(size) if isinstance(size, int) and size >= 0 else None,
                seconds=float(seconds)
                if isinstance(seconds, int | float) and seconds >= 0
                else None,
                at=at,
            )
        except (ValueError, TypeError, KeyError):
            return None


class LagSamples:
    """The newest sample per primary site; thread-safe, shared by one operator process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, LagSample] = {}

    def record(self, sample: LagSample) -> None:
        with self._lock:
            self._samples[sample.site] = sample

    def latest(self, site: str) -> LagSample | None:
        with self._lock:
            return self._samples.get(site)
