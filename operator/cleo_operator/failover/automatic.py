"""Automatic failover: notice a lost primary and create the CleoFailover that moves the tenant.

The tenant reconcile calls :meth:`AutomaticFailover.check` for each tenant that asks for
it (``spec.failover.automatic``). Why it is built this way:

- **Every failover is an object.** The operator does not fail over behind anyone's back:
  it creates a CleoFailover (type Failover, name ``<tenant>-auto-xxxxx``, labelled with the
  tenant and ``cleoai.io/automatic``) and the failover reconciler runs it like any other,
  so an automatic failover leaves the same audit trail as a manual one.
- **Health is asked per site, not per tenant.** Many tenants share a site; one probe
  (``SELECT pg_is_in_recovery()`` through the site's pool and circuit breaker) serves them
  all, and runs at most every ``probe_interval_seconds``. A probe runs in a small thread
  pool and a reconcile waits for it at most ``wait_seconds``, so a blackholed host does
  not hold tenant reconciles (the circuit breaker then makes later probes fail fast).
- **"Unavailable" means unreachable**, nothing else: a rejected login or a saturated pool
  is a server that answers, and failing over from a live primary because of a wrong
  password would be the worst possible outcome. The unavailability is remembered from the
  first failed probe; once it lasts longer than ``spec.failover.failoverDelay`` (and the
  standby answers), the CleoFailover is created.
- **Never two.** Before creating, the tenant's CleoFailovers are listed: none is created
  while one runs, and none again for the same outage once an automatic one was made for
  it (if it failed, people decide what next; the condition says so). The memory of the
  outage is this process's: after an operator restart, the delay counts again from the
  first failed probe, which errs on the side of waiting.
- While the primary is healthy, the probe also samples the replication lag, which is what
  a failover of a lost primary reports as its estimated RPO (``failover.samples``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Literal

from cleo_operator.api.base import parse_duration, rfc3339
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.core.times import read_rfc3339
from cleo_operator.data.errors import DataError, SiteBusy, SiteUnavailable
from cleo_operator.data.pool import SitePools
from cleo_operator.data.replication import replication_lag
from cleo_operator.failover.errors import FailoverError
from cleo_operator.failover.samples import LAG_ANNOTATION, LagSample, LagSamples
from cleo_operator.failover.steps import TRACE_ANNOTATION
from cleo_operator.failover.tenant import database_site
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import FAILOVER
from cleo_operator.observability.tracing import span, traceparent
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL

__all__ = [
    "AUTOMATIC_LABEL",
    "CONDITION_TYPE",
    "HEALTHY_RECHECK_SECONDS",
    "UNAVAILABLE_SINCE_ANNOTATION",
    "AutomaticCondition",
    "AutomaticFailover",
    "AutomaticOutcome",
    "AutomaticSettings",
]

logger = logging.getLogger(__name__)

CONDITION_TYPE: Final = "AutomaticFailover"
AUTOMATIC_LABEL: Final = "cleoai.io/automatic"
"""On CleoFailovers the operator created by itself: ``"true"``."""
UNAVAILABLE_SINCE_ANNOTATION: Final = "cleoai.io/primary-unavailable-since"
"""On an automatic CleoFailover: when the operator first found the primary unreachable."""

_TERMINAL: Final = ("Succeeded", "Failed")
HEALTHY_RECHECK_SECONDS: Final = 30.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutomaticSettings:
    """How often primaries are asked, and how long a tenant reconcile waits for the answer."""

    probe_interval_seconds: float = 5.0
    """A site's health is asked at most this often (shared by all its tenants)."""
    wait_seconds: float = 1.0
    """Longest a tenant reconcile waits for a probe; the answer is used when it comes."""
    sample_interval_seconds: float = 15.0
    """The replication lag of a healthy primary is sampled at most this often."""
    recheck_seconds: float = 2.0
    """While a primary is unavailable: call again at least this often."""
    healthy_recheck_seconds: float | None = HEALTHY_RECHECK_SECONDS
    """While all is well: call again after this long (None: leave it to the resync). It
    bounds how late an outage is noticed, on top of spec.failover.failoverDelay."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutomaticCondition:
    """The ``AutomaticFailover`` condition of the tenant (informational: it must not gate
    Ready; DatabaseReady already says whether the database works)."""

    status: Literal["True", "False", "Unknown"]
    """True: armed and the primary is healthy. False: it cannot act or is acting."""
    reason: str
    """``PrimaryAvailable``, ``PrimaryUnavailable``, ``FailoverCreated``,
    ``FailoverInProgress``, ``FailoverFailed``, ``StandbyUnavailable``, ``NoStandby``,
    ``Checking``, ``InvalidPrimarySite``."""
    message: str
    """For people."""
    type: str = CONDITION_TYPE
    """The condition type."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutomaticOutcome:
    """What one :meth:`AutomaticFailover.check` found and did."""

    condition: AutomaticCondition | None
    """Set it on the tenant; None: automatic failover is off (remove the condition)."""
    requeue_after: float | None
    """Call again within this many seconds."""
    created: str | None = None
    """The CleoFailover created by this call (post an Event), if any."""
    failover: str | None = None
    """The CleoFailover of the current outage, if there is one."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Probe:
    available: bool
    at: float
    wall: datetime.datetime
    message: str


@dataclasses.dataclass
class _Site:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    future: concurrent.futures.Future[_Probe] | None = None
    last: _Probe | None = None
    unavailable_since: _Probe | None = None
    sampled_at: float | None = None


class AutomaticFailover:
    """Health of primaries and automatic CleoFailovers; shared by all tenant reconciles."""

    def __init__(
        self,
        kube: KubeClient,
        pools: SitePools,
        *,
        settings: AutomaticSettings | None = None,
        lag_samples: LagSamples | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.kube = kube
        self.pools = pools
        self.settings = settings or AutomaticSettings()
        self.lag_samples = lag_samples or LagSamples()
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._sites: dict[str, _Site] = {}
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="primary-probe"
        )

    def close(self) -> None:
        """Stop probing (running probes are abandoned)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the check ----------------------------------------------------------------------

    def check(
        self,
        *,
        tenant: str,
        namespace: str,
        spec: CleoTenantSpec,
        annotations: Mapping[str, str] | None,
    ) -> AutomaticOutcome:
        """Health-check the tenant's primary; create its CleoFailover when it is due.

        Call it on every reconcile of a tenant whose namespace is active. Returns within
        about ``wait_seconds``. Raises only `KubeError` (listing or creating CleoFailovers
        failed: the API server's trouble, for the caller's backoff).
        """
        policy = spec.failover
        if not policy.automatic or not spec.database.enabled:
            return AutomaticOutcome(condition=None, requeue_after=None)
        try:
            primary = database_site(spec, annotations)
        except FailoverError as error:
            return _outcome("False", error.reason, error.message, requeue_after=None)
        target = policy.standby_site
        if target is None or target == primary:
            return _outcome(
                "False",
                "NoStandby",
                f"the tenant's primary is on site {primary!r}, which is also its "
                "spec.failover.standbySite (after a failover): there is no standby to fail "
                "over to. Set spec.failover.standbySite to a standby of that site.",
                requeue_after=None,
            )
        probe = self._probe(primary)
        if probe is None:
            return _outcome(
                "Unknown",
                "Checking",
                f"asking site {primary!r} whether it is up",
                requeue_after=self.settings.recheck_seconds,
            )
        if probe.available:
            return _outcome(
                "True",
                "PrimaryAvailable",
                f"site {primary!r} is up; if it is unreachable for longer than "
                f"{policy.failover_delay}, the tenant fails over to site {target!r}",
                requeue_after=self.settings.healthy_recheck_seconds,
            )
        since = self._unavailable_since(primary) or probe
        down = max(0.0, self._clock() - since.at)
        delay = parse_duration(policy.failover_delay).total_seconds()
        lock = self._tenant_lock(tenant)
        with lock:
            return self._while_down(
                tenant=tenant,
                namespace=namespace,
                primary=primary,
                target=target,
                since=since,
                down=down,
                delay=delay,
                probe=probe,
            )

    def _while_down(
        self,
        *,
        tenant: str,
        namespace: str,
        primary: str,
        target: str,
        since: _Probe,
        down: float,
        delay: float,
        probe: _Probe,
    ) -> AutomaticOutcome:
        ours = self._failovers(tenant, namespace)
        # A drill changes nothing and must not keep a real failover from happening.
        running = [
            o
            for o in ours
            if _phase(o) not in _TERMINAL and (o.get("spec") or {}).get("type") != "Drill"
        ]
        if running:
            name = running[0]["metadata"]["name"]
            return _outcome(
                "False",
                "FailoverInProgress",
                f"site {primary!r} is unreachable; CleoFailover {name} is moving the tenant",
                requeue_after=self.settings.recheck_seconds,
                failover=name,
            )
        floor = since.wall - datetime.timedelta(seconds=1)  # creation times are in seconds
        this_outage = sorted(
            (
                (created, o)
                for o in ours
                if (o["metadata"].get("labels") or {}).get(AUTOMATIC_LABEL) == "true"
                and (created := _created(o)) is not None
                and created >= floor
            ),
            key=lambda pair: pair[0],
        )
        if this_outage:
            latest = this_outage[-1][1]
            name = latest["metadata"]["name"]
            if _phase(latest) == "Failed":
                return _outcome(
                    "False",
                    "FailoverFailed",
                    f"site {primary!r} is unreachable and the automatic CleoFailover {name} "
                    "failed (its status says why); the operator does not try again for the "
                    "same outage. Fix the cause and create a CleoFailover by hand.",
                    requeue_after=None,
                    failover=name,
                )
            return _outcome(
                "False",
                "FailoverCreated",
                f"site {primary!r} is unreachable; CleoFailover {name} was created for it",
                requeue_after=self.settings.recheck_seconds,
                failover=name,
            )
        if down < delay:
            return _outcome(
                "False",
                "PrimaryUnavailable",
                f"site {primary!r} has been unreachable for {down:.0f}s ({probe.message}); "
                f"the tenant fails over to site {target!r} after {delay:.0f}s",
                requeue_after=max(0.1, min(self.settings.recheck_seconds, delay - down)),
            )
        standby = self._probe(target)
        if standby is None or not standby.available:
            why = "not answered yet" if standby is None else standby.message
            return _outcome(
                "False",
                "StandbyUnavailable",
                f"site {primary!r} has been unreachable for {down:.0f}s, but the standby site "
                f"{target!r} is not available either ({why}); no automatic failover",
                requeue_after=self.settings.recheck_seconds,
            )
        name = self._create(
            tenant=tenant, namespace=namespace, primary=primary, target=target, since=since
        )
        logger.warning(
            "tenant %s: primary site %s unreachable for %.0fs (failoverDelay %.0fs): created "
            "CleoFailover %s/%s to site %s",
            tenant,
            primary,
            down,
            delay,
            namespace,
            name,
            target,
        )
        return AutomaticOutcome(
            condition=AutomaticCondition(
                status="False",
                reason="FailoverCreated",
                message=f"site {primary!r} was unreachable for {down:.0f}s; CleoFailover "
                f"{name} moves the tenant to site {target!r}",
            ),
            requeue_after=self.settings.recheck_seconds,
            created=name,
            failover=name,
        )

    def _failovers(self, tenant: str, namespace: str) -> list[KubeObject]:
        return [
            obj
            for obj in self.kube.list(
                FAILOVER, namespace=namespace, label_selector=f"{TENANT_LABEL}={tenant}"
            )
            if (obj.get("spec") or {}).get("tenant") == tenant
        ]

    def _create(
        self, *, tenant: str, namespace: str, primary: str, target: str, since: _Probe
    ) -> str:
        annotations = {UNAVAILABLE_SINCE_ANNOTATION: rfc3339(since.wall)}
        sample = self.lag_samples.latest(primary)
        if sample is not None:
            annotations[LAG_ANNOTATION] = sample.to_annotation()
        with span(
            "failover detected",
            {"cleo.tenant": tenant, "cleo.site": primary, "cleo.target_site": target},
        ):
            # The failover's steps are spans of this trace: detection to verification.
            parent = traceparent()
            if parent is not None:
                annotations[TRACE_ANNOTATION] = parent
            return self._post(
                namespace=namespace, tenant=tenant, target=target, annotations=annotations
            )

    def _post(
        self, *, namespace: str, tenant: str, target: str, annotations: dict[str, str]
    ) -> str:
        created = self.kube.create(
            {
                "apiVersion": FAILOVER.api_version,
                "kind": FAILOVER.kind,
                "metadata": {
                    "generateName": f"{tenant}-auto-",
                    "namespace": namespace,
                    "labels": {
                        MANAGED_BY_LABEL: MANAGED_BY,
                        TENANT_LABEL: tenant,
                        AUTOMATIC_LABEL: "true",
                    },
                    "annotations": annotations,
                },
                "spec": {"tenant": tenant, "type": "Failover", "targetSite": target},
            }
        )
        return str(created["metadata"]["name"])

    # -- probes -------------------------------------------------------------------------

    def _site(self, name: str) -> _Site:
        with self._lock:
            return self._sites.setdefault(name, _Site())

    def _tenant_lock(self, tenant: str) -> threading.Lock:
        with self._lock:
            return self._tenant_locks.setdefault(tenant, threading.Lock())

    def _unavailable_since(self, name: str) -> _Probe | None:
        site = self._site(name)
        with site.lock:
            return site.unavailable_since

    def _probe(self, name: str) -> _Probe | None:
        """The newest answer about the site, asking again when it is older than the interval."""
        site = self._site(name)
        with site.lock:
            fresh = (
                site.last is not None
                and self._clock() - site.last.at < self.settings.probe_interval_seconds
            )
            if not fresh and site.future is None:
                site.future = self._executor.submit(self._ask, name)
            future = site.future
        if future is not None:
            concurrent.futures.wait([future], timeout=self.settings.wait_seconds)
            if future.done():
                self._settle(name, site, future)
        with site.lock:
            return site.last

    def _settle(self, name: str, site: _Site, future: concurrent.futures.Future[_Probe]) -> None:
        try:
            probe = future.result()
        except Exception as error:  # a bug in the probe: count it as no answer, say so
            probe = _Probe(
                available=False,
                at=self._clock(),
                wall=self._now(),
                message=f"the probe failed: {type(error).__name__}",
            )
        with site.lock:
            if site.future is not future:
                return
            site.future = None
            site.last = probe
            if probe.available:
                if site.unavailable_since is not None:
                    logger.info("site %s answers again", name)
                site.unavailable_since = None
            elif site.unavailable_since is None:
                logger.warning("site %s is unreachable: %s", name, probe.message)
                site.unavailable_since = probe

    def _ask(self, name: str) -> _Probe:
        """Runs in the probe pool: is the site up? Samples its lag while it is."""
        try:
            with self.pools.connection(name) as conn:
                conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except SiteBusy:
            return _Probe(available=True, at=self._clock(), wall=self._now(), message="busy")
        except SiteUnavailable as error:
            return _Probe(available=False, at=self._clock(), wall=self._now(), message=str(error))
        except DataError as error:
            # It answered (a refused login, a missing privilege): not an outage.
            return _Probe(available=True, at=self._clock(), wall=self._now(), message=error.reason)
        self._sample(name)
        return _Probe(available=True, at=self._clock(), wall=self._now(), message="up")

    def _sample(self, name: str) -> None:
        site = self._site(name)
        with site.lock:
            due = (
                site.sampled_at is None
                or self._clock() - site.sampled_at >= self.settings.sample_interval_seconds
            )
            if due:
                site.sampled_at = self._clock()
        if not due:
            return
        try:
            lag = replication_lag(self.pools, name)
        except DataError:
            return
        if lag.role != "primary":
            return
        self.lag_samples.record(
            LagSample(site=name, bytes=lag.lag_bytes, seconds=lag.lag_seconds, at=self._now())
        )


def _outcome(
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    *,
    requeue_after: float | None,
    failover: str | None = None,
) -> AutomaticOutcome:
    return AutomaticOutcome(
        condition=AutomaticCondition(status=status, reason=reason, message=message),
        requeue_after=requeue_after,
        failover=failover,
    )


def _phase(obj: KubeObject) -> str | None:
    phase = (obj.get("status") or {}).get("phase")
    return str(phase) if phase else None


def _created(obj: KubeObject) -> datetime.datetime | None:
    return read_rfc3339((obj.get("metadata") or {}).get("creationTimestamp"))
