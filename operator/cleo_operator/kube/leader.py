"""Leader election on a `coordination.k8s.io/v1` Lease: every replica starts, one reconciles.

The rules are client-go's (`tools/leaderelection`), on our own `KubeClient` (its
credentials, its User-Agent naming the replica, its typed errors) instead of a second
client library:

- **One record, one holder.** The Lease `cleo-operator-leader` in the operator's namespace
  holds the leader's identity (`spec.holderIdentity`), when it last renewed
  (`spec.renewTime`, for people) and for how long a renew counts
  (`spec.leaseDurationSeconds`).
- **Expiry by the observer's own clock.** A replica notes, on its local clock (monotonic,
  counting a suspend: kube/fence.py), when it first read the record as it is now (any
  change of the spec restarts that time): when the answer *came*, not when the GET was
  sent, since a slow answer can carry a renew made while it waited.
  The lease is expired for it once `leaseDurationSeconds` passed since then without a
  change. Clocks of different machines are never compared: a skewed node clock can neither
  shorten nor lengthen a lease.
- **Acquire** when the Lease is missing (create: of two creates, one gets 409
  AlreadyExists), free (no holder) or expired (also when the holder is this replica's own
  identity and it does not lead: an earlier attempt's write that landed after the client
  gave up on it, at a time unknown here): an update (PUT) carrying the
  `resourceVersion` that was read, so of two replicas that saw it expire at once one wins
  and the other gets 409 Conflict.
- **Renew** every retry period. For the holder, a renew counts from when its attempt
  *began* (before its GET was sent). If none succeeds within the renew deadline of the
  last one, leadership is lost: the write fence (kube/fence.py) is closed at that deadline
  by the clock itself, and `on_lost` runs (the operator exits, kube's client-go components
  do the same, and the pod comes back as a standby). Because the deadline is shorter than
  the lease duration, and other replicas start counting only after they saw that renew,
  this replica has stopped writing before any other can take the lease: `lease duration -
  renew deadline` is the margin for a write already on the wire and for the difference of
  clock rates. Every request of an attempt gets as timeout what is left of the deadline
  right before it is sent (none is sent with too little left), so an attempt never runs
  past it; a watchdog thread ends leadership (`on_lost`) shortly after the deadline
  whatever the election thread is blocked in. A 409 on a renew (someone else wrote the
  Lease) closes the fence at once, until a read shows the lease is still this replica's.
- **Release** on a graceful stop: `resign` first (no more renews, the fence sealed), then
  the process waits, until the renew deadline at most, for its work to end, and only then
  `release` clears the holder (an update on the resourceVersion this replica wrote), so a
  standby takes over at its next retry instead of waiting for the lease to expire. Work
  that did not end in time: no release, the process exits and the lease expires. Once
  released or lost, the fence never opens again.

One Lease now; sharded reconciliation would hold one such Lease per shard, each with its
own elector and fence (issue 14), which is why the Lease's name is a parameter.
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cleo_operator.api.objects import KubeObject
from cleo_operator.core.environment import seconds_setting
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.fence import WriteFence, boottime
from cleo_operator.kube.kinds import LEASE
from cleo_operator.kube.permissions import LEADER_LEASE
from cleo_operator.observability.metrics import LEADER

__all__ = [
    "LEASE_ENV",
    "RENEW_DEADLINE_ENV",
    "RETRY_PERIOD_ENV",
    "ElectionTimings",
    "LeaderElector",
    "lease_expired",
]

log = logging.getLogger(__name__)

LEASE_ENV: Final = "CLEO_LEADER_ELECTION_LEASE_SECONDS"
RENEW_DEADLINE_ENV: Final = "CLEO_LEADER_ELECTION_RENEW_DEADLINE_SECONDS"
RETRY_PERIOD_ENV: Final = "CLEO_LEADER_ELECTION_RETRY_PERIOD_SECONDS"
MIN_REQUEST_TIMEOUT: Final = 0.05
"""The shortest timeout a request of the elector gets (seconds): with less time left
before the deadline, the request is not sent."""
WATCHDOG_SLACK_SECONDS: Final = 0.5
"""How long after the renew deadline the watchdog ends the process (at most half the
margin `lease duration - renew deadline`)."""


class _NoTimeLeft(Exception):
    """Too little time is left before the deadline to send the next request."""


@dataclass(frozen=True, kw_only=True)
class ElectionTimings:
    """How long a lease lasts, how long a leader tries to renew, how often replicas try.

    A crashed leader's tenants wait at most `lease_seconds` plus one `retry_seconds` for a
    standby (a SIGTERM'd one's about one `retry_seconds`: it releases the lease).
    """

    lease_seconds: float = 15.0
    """How long a standby waits, after it last saw the Lease change, before taking it
    (`spec.leaseDurationSeconds`, so whole seconds)."""
    renew_deadline_seconds: float = 10.0
    """A leader whose renews all failed for this long stops writing and exits."""
    retry_seconds: float = 2.0
    """How often the leader renews, and a standby looks whether it may take over."""

    def __post_init__(self) -> None:
        if not (self.lease_seconds >= 1 and float(self.lease_seconds).is_integer()):
            raise ValueError(
                f"the leader election's lease duration must be whole seconds, at least 1 "
                f"(got {self.lease_seconds:g})"
            )
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "leader election timings must be retry period < renew deadline < lease "
                f"duration (got {self.retry_seconds:g} s, {self.renew_deadline_seconds:g} s, "
                f"{self.lease_seconds:g} s)"
            )

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        lease_seconds: float | None = None,
        renew_deadline_seconds: float | None = None,
        retry_seconds: float | None = None,
    ) -> ElectionTimings:
        """The keywords given (the command line's flags), else LEASE_ENV, RENEW_DEADLINE_ENV
        and RETRY_PERIOD_ENV (seconds), else the defaults above; ValueError names what is
        wrong."""
        defaults = cls()

        def pick(given: float | None, variable: str, default: float) -> float:
            if given is not None:
                return given
            return seconds_setting(environ, variable, default=default)

        return cls(
            lease_seconds=pick(lease_seconds, LEASE_ENV, defaults.lease_seconds),
            renew_deadline_seconds=pick(
                renew_deadline_seconds, RENEW_DEADLINE_ENV, defaults.renew_deadline_seconds
            ),
            retry_seconds=pick(retry_seconds, RETRY_PERIOD_ENV, defaults.retry_seconds),
        )


def lease_expired(spec: Mapping[str, Any], *, observed_at: float, now: float) -> bool:
    """Whether a Lease whose spec this replica has seen unchanged since `observed_at` (its
    monotonic clock) is free to take at `now`: no holder, or not renewed for its
    leaseDurationSeconds."""
    if not spec.get("holderIdentity"):
        return True
    duration = float(spec.get("leaseDurationSeconds") or 0)
    return now >= observed_at + duration


def _micro_time(moment: datetime.datetime) -> str:
    """A MicroTime as the API server reads it: always six digits of a second, in UTC."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease for this replica (see the module docstring).

    `start()` runs the election in a thread of its own (the reconciles cannot delay a
    renew); `try_acquire_or_renew()` is one attempt, for tests and the thread. `fence` is
    open exactly while this replica may write; give it to the reconcilers' client.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        identity: str,
        timings: ElectionTimings | None = None,
        name: str = LEADER_LEASE,
        on_lost: Callable[[], None] | None = None,
        clock: Callable[[], float] = boottime,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or ElectionTimings()
        self.on_lost = on_lost
        self._clock = clock
        self._wall = wall
        self.fence = WriteFence(clock)
        self._state = threading.Lock()
        """Held while a successful attempt records itself, and while leadership ends: an
        attempt still on the wire then cannot reopen the fence (it is sealed)."""
        self._renew_deadline = float("-inf")
        """Leading: the last successful attempt's start plus the renew deadline."""
        self._lease: KubeObject | None = None
        """The Lease as this replica last wrote it (holding it)."""
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._taken = False
        """Another replica holds the lease this one led with (it lost, whatever the time)."""
        self._leading = threading.Event()
        self._lost = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        """Released or lost: the watchdog ends."""
        LEADER.labels(identity=identity).set(0)

    # -- state -------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    @property
    def clock(self) -> Callable[[], float]:
        """The clock of the fence and the deadlines (seconds)."""
        return self._clock

    @property
    def renew_deadline(self) -> float:
        """Leading: when the last renew's deadline passes, by `clock` (-inf otherwise)."""
        return self._renew_deadline

    @property
    def lost(self) -> bool:
        """Whether this replica led and lost the lease (not by releasing it)."""
        return self._lost.is_set()

    # -- one attempt ---------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """Acquire the Lease, or renew it if this replica holds it; True on success.

        Never raises for what the API server (or no answer) says: a failed attempt is
        logged and is False, and the caller tries again after a retry period. Once the
        lease was released or lost, always False, without a request.
        """
        if self.fence.sealed:
            return False  # released or lost: this replica never leads again
        started = self._clock()
        leading = self.leading
        if leading and started >= self._renew_deadline:
            return False  # past the renew deadline: leadership is over, even if a write would pass
        # No request of this attempt may end after it: leading, the renew deadline; else
        # the deadline the fence would get from this attempt.
        deadline = (
            self._renew_deadline if leading else started + self.timings.renew_deadline_seconds
        )
        try:
            lease = self._read(self._timeout_until(deadline))
            # The record is as the API server had it when it answered, not when the GET was
            # sent: a renew that came while the GET waited (API Priority and Fairness, a
            # loaded server) counts from now (client-go's observedTime too).
            read_at = self._clock()
            if lease is None:
                written = self._write("POST", self._new_lease(), self._timeout_until(deadline))
            else:
                spec = lease.get("spec") or {}
                self._observe(spec, read_at)
                holder = spec.get("holderIdentity") or ""
                if leading:
                    if holder != self.identity:
                        log.error(
                            "the leader lease is held by %s now, not by this replica",
                            holder or "nobody",
                        )
                        self.fence.close()  # never a write beside another leader
                        self._taken = True
                        return False
                # Not leading, a holder is waited out by this replica's own count, even when
                # it is this replica's identity (an earlier create or update of this process
                # that landed after its client gave up on it): when that record was written
                # is not known here, and waiting a lease is always safe.
                elif not lease_expired(spec, observed_at=self._observed_at, now=read_at):
                    return False
                written = self._write("PUT", self._taken_over(lease), self._timeout_until(deadline))
        except _NoTimeLeft:
            log.warning("leader lease: no time left before the renew deadline for a request")
            return False
        except KubeError as exc:
            if exc.conflict and leading:
                # Someone else wrote the Lease since this replica read it: until a read shows
                # the lease is still this replica's, no write.
                self.fence.close()
                log.warning("leader lease: written by someone else meanwhile (%s)", exc.reason)
            elif exc.conflict:
                log.info("leader lease: another replica wrote it first (%s)", exc.reason)
            else:
                log.warning("leader lease: %s", exc)
            return False
        except Exception as exc:  # no answer: urllib3's timeouts and connection errors
            log.warning("leader lease: no answer from the API server (%s)", type(exc).__name__)
            return False
        with self._state:
            if self.fence.sealed:
                return False  # released or lost while this attempt was on the wire
            self._lease = written
            self._observe(written.get("spec") or {}, self._clock())
            # The holder's own deadline counts from when this attempt began, before any
            # request of it was sent: never later than what a standby counts from.
            self._renew_deadline = started + self.timings.renew_deadline_seconds
            self.fence.open_until(self._renew_deadline)
            if not self._leading.is_set():
                self._leading.set()
                LEADER.labels(identity=self.identity).set(1)
                log.info("this replica (%s) leads: the leader lease is its own", self.identity)
        return True

    def _timeout_until(self, deadline: float) -> float:
        """The timeout of a request about to be sent: what is left until `deadline` (no
        request when too little is left)."""
        left = deadline - self._clock()
        if left < MIN_REQUEST_TIMEOUT:
            raise _NoTimeLeft
        return left

    def _observe(self, spec: Mapping[str, Any], now: float) -> None:
        if spec != self._observed_spec:
            self._observed_spec = copy.deepcopy(dict(spec))
            self._observed_at = now

    def _read(self, timeout: float) -> KubeObject | None:
        try:
            lease: KubeObject = self.kube.request(
                "GET",
                LEASE.path(namespace=self.namespace, name=self.name),
                what=f"read Lease {self.namespace}/{self.name}",
                timeout=timeout,
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return lease

    def _write(self, method: str, lease: Mapping[str, Any], timeout: float) -> KubeObject:
        path = LEASE.path(namespace=self.namespace, name=None if method == "POST" else self.name)
        written: KubeObject = self.kube.request(
            method,
            path,
            body=lease,
            what=f"{'create' if method == 'POST' else 'update'} Lease {self.namespace}/{self.name}",
            timeout=timeout,
        )
        return written

    def _new_lease(self) -> dict[str, Any]:
        now = _micro_time(self._wall())
        return {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.timings.lease_seconds),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }

    def _taken_over(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """`lease` held (or renewed) by this replica; its resourceVersion stays in it."""
        updated = copy.deepcopy(dict(lease))
        spec = dict(updated.get("spec") or {})
        now = _micro_time(self._wall())
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = int(self.timings.lease_seconds)
        spec["renewTime"] = now
        updated["spec"] = spec
        return updated

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Run the election in a daemon thread: acquire, then renew until stopped or lost;
        and the watchdog in another (see `_watch`)."""
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="leader-watchdog", daemon=True).start()

    def stop(self) -> None:
        """End the thread (without giving the lease up: see `release`)."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timings.renew_deadline_seconds + 1)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self.try_acquire_or_renew():
                    break
                if self.fence.sealed:
                    return
                self._stopping.wait(self.timings.retry_seconds)
            else:
                return
            self._renew_until_stopped()
        except Exception:
            log.exception("leader election failed")
            self._lose("the election thread failed")

    def _renew_until_stopped(self) -> None:
        retry = self.timings.retry_seconds
        while not self._stopping.wait(retry):
            while not self.try_acquire_or_renew():
                now = self._clock()
                if self._stopping.is_set() or self.fence.sealed:
                    return
                if self._taken:
                    self._lose("another replica holds the lease")
                    return
                if now >= self._renew_deadline:
                    self._lose(
                        f"no renew succeeded within the renew deadline "
                        f"({self.timings.renew_deadline_seconds:g} s)"
                    )
                    return
                if self._stopping.wait(min(retry, self._renew_deadline - now)):
                    return

    def _watch(self) -> None:
        """The watchdog: ends leadership (`on_lost`: the process exits) shortly after the
        renew deadline passed without a renew, whatever the election thread is doing (a
        request that outlasts its timeout, a thread starved). It reads only the clock and
        the deadline, and sends nothing."""
        slack = min(
            WATCHDOG_SLACK_SECONDS,
            (self.timings.lease_seconds - self.timings.renew_deadline_seconds) / 2,
        )
        wait = self.timings.retry_seconds
        while not self._finished.wait(wait):
            if not self.leading:
                wait = self.timings.retry_seconds
                continue
            late = self._clock() - (self._renew_deadline + slack)
            if late >= 0:
                self._lose(
                    f"no renew succeeded within the renew deadline "
                    f"({self.timings.renew_deadline_seconds:g} s), and the election thread "
                    "has not ended leadership: the watchdog does"
                )
                return
            wait = min(-late, self.timings.retry_seconds)

    def _lose(self, why: str) -> None:
        with self._state:
            if self._finished.is_set():
                return  # released, or lost already (the watchdog and the thread both saw it)
            self.fence.seal()
            self._finished.set()
            was_leading = self._leading.is_set()
            self._leading.clear()
        LEADER.labels(identity=self.identity).set(0)
        self._lost.set()
        log.error(
            "lost the leader lease (%s): this replica writes nothing more%s",
            why,
            "" if was_leading else " (it never led)",
        )
        if self.on_lost is not None:
            self.on_lost()

    # -- graceful stop ---------------------------------------------------------------------

    def resign(self) -> float:
        """Stop renewing and close the fence for good (the first step of a graceful stop);
        the lease stays held until `release`. Returns the renew deadline (by `clock`; -inf
        when not leading): work of this process still running then must end before it,
        the moment from which the lease may pass to another replica no earlier than a
        margin later (see the module docstring)."""
        self.stop()
        with self._state:
            self.fence.seal()
            return self._renew_deadline if self._leading.is_set() else float("-inf")

    def release(self) -> bool:
        """Stop the thread and, if this replica leads, give the lease up (holder cleared)
        so that a standby takes over at its next retry; True if released. Call it after
        the handlers stopped and their work ended (`resign`): from here on this replica
        writes nothing."""
        self.stop()
        with self._state:
            self.fence.seal()
            self._finished.set()
            self._leading.clear()
        LEADER.labels(identity=self.identity).set(0)
        held = (
            self._lease is not None
            and (self._lease.get("spec") or {}).get("holderIdentity") == self.identity
        )
        if self._lost.is_set() or not held:
            return False
        assert self._lease is not None
        released = copy.deepcopy(dict(self._lease))
        now = _micro_time(self._wall())
        spec = dict(released.get("spec") or {})
        spec.pop("holderIdentity", None)
        spec.update(leaseDurationSeconds=1, acquireTime=now, renewTime=now)
        released["spec"] = spec
        try:
            self._write("PUT", released, self.timings.renew_deadline_seconds)
        except Exception as exc:
            log.warning(
                "could not release the leader lease (%s): a standby takes over when it "
                "expires, in %g s",
                exc if isinstance(exc, KubeError) else type(exc).__name__,
                self.timings.lease_seconds,
            )
            return False
        log.info("released the leader lease")
        return True

    def abandon(self) -> None:
        """End leadership without giving the lease up (work of this process may still run:
        the lease expires at the standbys, after the process exited)."""
        with self._state:
            self.fence.seal()
            self._finished.set()
            self._leading.clear()
        LEADER.labels(identity=self.identity).set(0)
