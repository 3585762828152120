"""The leader election's decisions (kube/leader.py) with a fake clock, on FakeKube.

What is judged here is the pure logic: when a replica may take the Lease (free, expired by
its own clock since it last saw the record change, never by comparing clocks), optimistic
concurrency (a 409 means another won), the renew deadline that closes the write fence by
the clock alone, and the release. The processes, the real API server and the timings end
to end are e2e/test_leader_election.py's.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from cleo_operator.cli.root import build_parser
from cleo_operator.cli.run import (
    StartupError,
    election_timings,
    hand_over,
    replica_identity,
    user_agent,
)
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.fence import NOT_LEADER, WriteFence, boottime
from cleo_operator.kube.kinds import LEASE
from cleo_operator.kube.leader import (
    LEASE_ENV,
    RENEW_DEADLINE_ENV,
    RETRY_PERIOD_ENV,
    ElectionTimings,
    LeaderElector,
    lease_expired,
)
from cleo_operator.kube.permissions import LEADER_LEASE
from tests.harness.fake_kube import FakeKube

NAMESPACE = "cleo-system"
TIMINGS = ElectionTimings(lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2)


class Clock:
    """A monotonic clock and a wall clock that tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += datetime.timedelta(seconds=seconds)

    def wall_now(self) -> datetime.datetime:
        return self.wall


def elector(kube: FakeKube, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        kube,
        namespace=NAMESPACE,
        identity=identity,
        timings=TIMINGS,
        clock=clock,
        wall=clock.wall_now,
    )


def stored(kube: FakeKube) -> dict[str, Any]:
    (lease,) = kube.objects(LEASE, namespace=NAMESPACE)
    return dict(lease)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(namespaces=(NAMESPACE,))


def test_the_first_replica_creates_the_lease_and_may_write_until_its_renew_deadline(
    kube: FakeKube,
) -> None:
    clock = Clock()
    a = elector(kube, clock, "a")
    assert not a.fence.is_open()
    assert a.try_acquire_or_renew()
    lease = stored(kube)
    assert lease["metadata"]["name"] == LEADER_LEASE
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"] == "2026-01-01T00:00:00.000000Z"
    clock.advance(9.9)
    assert a.fence.is_open()
    clock.advance(0.1)
    assert not a.fence.is_open(), "the fence closes by the clock at the renew deadline"


def test_a_standby_waits_a_whole_lease_from_when_it_saw_the_record_unchanged(
    kube: FakeKube,
) -> None:
    clock = Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    clock.advance(5)
    assert not b.try_acquire_or_renew()  # b sees the record for the first time now
    clock.advance(14.9)
    assert not b.try_acquire_or_renew()  # 14.9 s of b's clock: not expired for b yet
    clock.advance(0.1)
    assert b.try_acquire_or_renew()
    spec = stored(kube)["spec"]
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"]


def test_each_renew_restarts_the_standbys_count(kube: FakeKube) -> None:
    clock = Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    for _ in range(20):  # 40 s of a leader renewing every 2 s
        clock.advance(2)
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert stored(kube)["spec"]["holderIdentity"] == "a"
    assert a.fence.until == clock.now + 10


def test_expiry_never_compares_clocks_a_renew_time_far_in_the_past_is_not_expired(
    kube: FakeKube,
) -> None:
    """A leader on a node whose clock is an hour behind writes renewTimes an hour old; a
    standby that compared them with its own clock would take over at once."""
    clock = Clock()
    skewed = Clock()
    skewed.wall -= datetime.timedelta(hours=1)
    behind = LeaderElector(
        kube, namespace=NAMESPACE, identity="a", timings=TIMINGS, clock=clock, wall=skewed.wall_now
    )
    b = elector(kube, clock, "b")
    assert behind.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.advance(14)
    assert not b.try_acquire_or_renew()


def test_a_free_lease_is_taken_at_once(kube: FakeKube) -> None:
    clock = Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert "holderIdentity" not in stored(kube)["spec"]
    assert not a.fence.is_open()
    assert b.try_acquire_or_renew(), "a released lease needs no waiting"
    assert stored(kube)["spec"]["holderIdentity"] == "b"


def test_a_conflict_means_another_replica_won(kube: FakeKube) -> None:
    clock = Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    assert a.release()
    kube.refuse("update", LEASE, LEADER_LEASE, status=409, reason="Conflict")
    assert not b.try_acquire_or_renew()
    assert not b.leading
    assert not b.fence.is_open()


def test_of_two_creates_one_wins(kube: FakeKube) -> None:
    """Two replicas that both found no Lease both create it: the API server answers the
    second 409 AlreadyExists, and it stands by."""
    clock = Clock()
    b = elector(kube, clock, "b")
    kube.refuse("create", LEASE, LEADER_LEASE, status=409, reason="AlreadyExists")
    assert not b.try_acquire_or_renew()
    assert not b.leading
    assert not b.fence.is_open()


def test_a_leader_past_its_renew_deadline_does_not_renew_again(kube: FakeKube) -> None:
    """Once the deadline passed, leadership is over even if the API server would still take
    the renew: the process exits, it does not carry on."""
    clock = Clock()
    a = elector(kube, clock, "a")
    assert a.try_acquire_or_renew()
    assert a.leading
    kube.refuse("update", LEASE, LEADER_LEASE, status=500, reason="InternalError")
    clock.advance(2)
    assert not a.try_acquire_or_renew()
    clock.advance(8)
    writes = len(kube.writes)
    assert not a.try_acquire_or_renew()
    assert len(kube.writes) == writes, "no request once past the deadline"
    assert not a.fence.is_open()


def test_a_leader_that_sees_another_holder_gives_up_at_once(kube: FakeKube) -> None:
    clock = Clock()
    a = elector(kube, clock, "a")
    assert a.try_acquire_or_renew()
    lease = stored(kube)
    lease["spec"]["holderIdentity"] = "intruder"
    kube.request("PUT", LEASE.path(namespace=NAMESPACE, name=LEADER_LEASE), body=lease)
    clock.advance(2)
    assert not a.try_acquire_or_renew()
    assert not a.fence.is_open(), "closed at once, not at the renew deadline"
    writes = len(kube.writes)
    clock.advance(2)
    assert not a.try_acquire_or_renew()
    assert len(kube.writes) == writes, "it never writes over another holder"


def test_lease_expired_reads_only_the_holder_and_the_duration() -> None:
    held = {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "1970-01-01T00:00:00Z"}
    assert not lease_expired(held, observed_at=100, now=114.9)
    assert lease_expired(held, observed_at=100, now=115)
    assert lease_expired({"leaseDurationSeconds": 15}, observed_at=100, now=100)
    assert lease_expired({"holderIdentity": ""}, observed_at=100, now=100)


def test_timings_are_validated_and_read_from_flags_then_environment() -> None:
    assert ElectionTimings() == TIMINGS
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        ElectionTimings(lease_seconds=10, renew_deadline_seconds=10, retry_seconds=2)
    with pytest.raises(ValueError, match="retry period < renew deadline"):
        ElectionTimings(lease_seconds=15, renew_deadline_seconds=2, retry_seconds=2)
    with pytest.raises(ValueError, match="whole seconds"):
        ElectionTimings(lease_seconds=4.5, renew_deadline_seconds=3, retry_seconds=1)
    env = {LEASE_ENV: "4", RENEW_DEADLINE_ENV: "3", RETRY_PERIOD_ENV: "0.5"}
    assert ElectionTimings.from_environment(env) == ElectionTimings(
        lease_seconds=4, renew_deadline_seconds=3, retry_seconds=0.5
    )
    assert ElectionTimings.from_environment(env, retry_seconds=1).retry_seconds == 1
    with pytest.raises(ValueError, match=RENEW_DEADLINE_ENV):
        ElectionTimings.from_environment({RENEW_DEADLINE_ENV: "soon"})


@pytest.mark.security
def test_a_closed_fence_stops_a_write_before_it_is_sent_and_lets_reads_through() -> None:
    """The real client, pointed at a port where nothing listens: a fenced write fails with
    NotLeader (nothing was sent), a read gets as far as the network."""
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:9"
    configuration.retries = 0
    kube = KubeClient(k8s.ApiClient(configuration))
    kube.fence = WriteFence()
    with pytest.raises(KubeError) as refused:
        kube.request("PATCH", "/api/v1/namespaces/x", body={}, what="patch Namespace x")
    assert refused.value.reason == NOT_LEADER
    assert "patch Namespace x" in str(refused.value)
    with pytest.raises(Exception) as read_failed:  # noqa: PT011 - urllib3's, whichever
        kube.request("GET", "/api/v1/namespaces/x", timeout=2)
    assert getattr(read_failed.value, "reason", None) != NOT_LEADER


def test_a_fence_opens_until_a_deadline_and_never_shortens() -> None:
    clock = Clock()
    fence = WriteFence(clock)
    fence.open_until(clock.now + 10)
    fence.open_until(clock.now + 5)
    assert fence.until == clock.now + 10
    clock.advance(10)
    assert not fence.is_open()
    fence.open_until(clock.now + 1)
    fence.close()
    assert not fence.is_open()


def test_replica_identity_is_the_pod_name_and_a_random_suffix() -> None:
    one, two = (
        replica_identity({"POD_NAME": "cleo-operator-7d9f-abcde"}),
        replica_identity({"POD_NAME": "cleo-operator-7d9f-abcde"}),
    )
    assert one.startswith("cleo-operator-7d9f-abcde_")
    assert one != two, "two processes of one pod never share an identity"
    assert replica_identity({})  # the host name then


def test_the_run_command_takes_the_timings_from_its_flags_then_the_environment() -> None:
    args = build_parser().parse_args(["run", "--leader-election-retry-period", "1"])
    timings = election_timings(args, {LEASE_ENV: "4", RENEW_DEADLINE_ENV: "3"})
    assert timings == ElectionTimings(lease_seconds=4, renew_deadline_seconds=3, retry_seconds=1)
    bad = build_parser().parse_args(["run", "--leader-election-renew-deadline", "20"])
    with pytest.raises(StartupError, match="renew deadline < lease duration"):
        election_timings(bad, {})


def test_the_user_agent_names_the_replica() -> None:
    identity = replica_identity({"POD_NAME": "cleo-operator-0"})
    assert identity in user_agent(identity)
    assert user_agent(identity).startswith("cleo-operator/")


# -- the reviewer's findings (slow answers, attempts past the deadline, 409s, the end) ------


class SlowGet:
    """A replica's view of the API server whose next GET is answered `delay` s after it was
    sent, with `during()` (another replica's renew) run while it waits in the queue."""

    def __init__(self, kube: FakeKube, clock: Clock) -> None:
        self.kube, self.clock = kube, clock
        self.slow: tuple[float, Any] | None = None

    def request(self, method: str, path: str, **options: Any) -> Any:
        if method == "GET" and self.slow is not None:
            delay, during = self.slow
            self.slow = None
            self.clock.advance(delay - 1.0)
            during()
            self.clock.advance(1.0)
        return self.kube.request(method, path, **options)


class Failing:
    """A replica's view of the API server: every request a 503 once `down`."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube, self.down = kube, False

    def request(self, method: str, path: str, **options: Any) -> Any:
        if self.down:
            raise KubeError(status=503, reason="ServiceUnavailable", message="", what=path)
        return self.kube.request(method, path, **options)


def on(view: Any, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        view,
        namespace=NAMESPACE,
        identity=identity,
        timings=TIMINGS,
        clock=clock,
        wall=clock.wall_now,
    )


@pytest.mark.security
def test_a_standby_counts_from_when_the_answer_came_not_from_when_it_asked(
    kube: FakeKube,
) -> None:
    """A GET that waited 9.9 s in the API server answers with a renew made while it waited:
    counting from when it was sent, the standby led 3.5 s while the old leader's fence was
    open (the reviewer's proof of concept)."""
    clock = Clock()
    a_view, b_view = Failing(kube), SlowGet(kube, clock)
    a, b = on(a_view, clock, "a"), on(b_view, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()

    def leader_renews() -> None:
        assert a.try_acquire_or_renew()  # while b's GET waits
        a_view.down = True  # from here on a's renews fail

    clock.advance(1)
    b_view.slow = (9.9, leader_renews)
    assert not b.try_acquire_or_renew()
    while not b.try_acquire_or_renew():
        assert not a.try_acquire_or_renew()
        clock.advance(0.5)
    assert b.leading
    assert not a.fence.is_open(), "two replicas may write at once"
    assert clock.now >= a.renew_deadline + (TIMINGS.lease_seconds - TIMINGS.renew_deadline_seconds)


class SlowServer:
    """A GET answered just before its timeout, then requests that hang their whole
    timeout (an API server overloaded, then unreachable)."""

    def __init__(self, kube: FakeKube, clock: Clock) -> None:
        self.kube, self.clock, self.slow = kube, clock, False
        self.sent: list[tuple[str, float]] = []

    def request(self, method: str, path: str, **options: Any) -> Any:
        if not self.slow:
            return self.kube.request(method, path, **options)
        self.sent.append((method, options["timeout"]))
        if method == "GET":
            self.clock.advance(options["timeout"] - 0.01)
            return self.kube.request(method, path, **options)
        self.clock.advance(options["timeout"])
        raise TimeoutError("read timed out")


@pytest.mark.security
def test_no_request_of_a_renew_attempt_runs_past_the_renew_deadline(kube: FakeKube) -> None:
    """One timeout computed per attempt and used for the GET and the PUT let an attempt end
    a whole timeout after the deadline, past the moment a standby may lead."""
    clock = Clock()
    a_view = SlowServer(kube, clock)
    a, b = on(a_view, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    deadline = a.renew_deadline
    assert not b.try_acquire_or_renew()
    clock.advance(2)
    a_view.slow = True
    assert not a.try_acquire_or_renew()
    assert clock.now <= deadline, (
        f"the attempt ended {clock.now - deadline:.2f} s past the deadline"
    )
    assert [method for method, _ in a_view.sent] == ["GET"], "no PUT with no time left"
    assert not b.try_acquire_or_renew(), "the standby may not lead yet"


@pytest.mark.security
def test_a_409_on_a_renew_closes_the_fence_at_once(kube: FakeKube) -> None:
    clock = Clock()
    a = elector(kube, clock, "a")
    assert a.try_acquire_or_renew()
    kube.refuse("update", LEASE, LEADER_LEASE, status=409, reason="Conflict")
    clock.advance(2)
    assert not a.try_acquire_or_renew()
    assert not a.fence.is_open(), "someone else wrote the lease: not a write until read again"


def test_a_replica_that_finds_its_own_name_without_leading_waits_a_whole_lease(
    kube: FakeKube,
) -> None:
    """Its create landed after its client gave up on it (no answer): when that was is not
    known, so the record is waited out like another holder's."""
    clock = Clock()
    a = elector(kube, clock, "a")
    kube.request(
        "POST",
        LEASE.path(namespace=NAMESPACE),
        body={
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {"name": LEADER_LEASE, "namespace": NAMESPACE},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    assert not a.try_acquire_or_renew()
    assert not a.fence.is_open()
    clock.advance(14.9)
    assert not a.try_acquire_or_renew()
    clock.advance(0.1)
    assert a.try_acquire_or_renew()


class Parked:
    """A renew that is on the wire while `during()` runs (the graceful stop)."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.during: Any = None

    def request(self, method: str, path: str, **options: Any) -> Any:
        if method == "PUT" and self.during is not None:
            during, self.during = self.during, None
            during()
        return self.kube.request(method, path, **options)


@pytest.mark.security
@pytest.mark.parametrize("end", ["release", "resign", "abandon"])
def test_once_released_the_fence_never_opens_again(kube: FakeKube, end: str) -> None:
    """A renew still in flight when the lease is given up (stop()'s join timed out) must not
    reopen the fence when its answer comes."""
    clock = Clock()
    view = Parked(kube)
    a = on(view, clock, "a")
    assert a.try_acquire_or_renew()
    clock.advance(2)
    view.during = getattr(a, end)
    assert not a.try_acquire_or_renew()
    assert not a.fence.is_open()
    assert not a.try_acquire_or_renew()
    assert not a.fence.is_open()


@pytest.mark.security
def test_a_lost_lease_is_never_taken_again_by_the_same_elector(kube: FakeKube) -> None:
    clock = Clock()
    a = elector(kube, clock, "a")
    assert a.try_acquire_or_renew()
    lease = stored(kube)
    lease["spec"]["holderIdentity"] = ""
    kube.request("PUT", LEASE.path(namespace=NAMESPACE, name=LEADER_LEASE), body=lease)
    clock.advance(2)
    assert not a.try_acquire_or_renew(), "a holder cleared under the leader: it lost"
    a._lose("test")  # what the election thread does next
    writes = len(kube.writes)
    assert not a.try_acquire_or_renew()
    assert len(kube.writes) == writes
    assert not a.fence.is_open()


def test_the_fence_clock_counts_a_suspend() -> None:
    """CLOCK_BOOTTIME, not CLOCK_MONOTONIC (which stops while the machine is suspended)."""
    assert LeaderElector(FakeKube(), namespace=NAMESPACE, identity="a").clock is boottime
    assert WriteFence()._clock is boottime
    assert abs(boottime() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1


class Hanging:
    """Requests that hang (a TCP connection the kernel keeps open, a timeout not honoured)
    once `hang` is set, until the test ends."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.hang = threading.Event()
        self.release = threading.Event()

    def request(self, method: str, path: str, **options: Any) -> Any:
        if self.hang.is_set():
            self.release.wait(30)
            raise TimeoutError
        return self.kube.request(method, path, **options)


@pytest.mark.security
def test_the_watchdog_ends_leadership_while_the_election_thread_is_stuck(kube: FakeKube) -> None:
    """Real threads and clock: a renew blocked past its timeout cannot keep the process
    running past the renew deadline; the watchdog calls on_lost shortly after it."""
    timings = ElectionTimings(lease_seconds=2, renew_deadline_seconds=1, retry_seconds=0.2)
    view = Hanging(kube)
    lost_at: list[float] = []
    a = LeaderElector(
        view,  # type: ignore[arg-type]
        namespace=NAMESPACE,
        identity="a",
        timings=timings,
        on_lost=lambda: lost_at.append(boottime()),
    )
    try:
        a.start()
        started = boottime()
        while not a.leading:
            assert boottime() - started < 5
            time.sleep(0.01)
        view.hang.set()
        while not lost_at:
            assert boottime() - started < 10
            time.sleep(0.01)
        assert lost_at[0] <= a.renew_deadline + 0.5 + 0.3
        assert not a.fence.is_open()
        assert a.lost
    finally:
        view.release.set()
        a.stop()


# -- the graceful stop (cli/run.py hand_over) --------------------------------------------


@pytest.mark.security
def test_a_graceful_stop_closes_the_fence_then_waits_then_releases(kube: FakeKube) -> None:
    """The fence closes before the wait for the work still running (its writes are refused
    from then on), the wait ends by the renew deadline, and the lease is released after."""
    clock = Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    clock.advance(2)
    assert a.try_acquire_or_renew()
    clock.advance(1)
    seen: dict[str, Any] = {}

    def work_ended(budget: float) -> bool:
        seen.update(budget=budget, fence_open=a.fence.is_open(), renewed=a.try_acquire_or_renew())
        seen["holder"] = stored(kube)["spec"].get("holderIdentity")
        return True

    assert hand_over(a, work_ended)
    assert seen == {"budget": 9.0, "fence_open": False, "renewed": False, "holder": "a"}
    assert "holderIdentity" not in stored(kube)["spec"], "released after the work ended"
    assert b.try_acquire_or_renew()


@pytest.mark.security
def test_work_still_running_at_the_deadline_leaves_the_lease_to_expire(kube: FakeKube) -> None:
    clock = Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()

    def work_ended(budget: float) -> bool:
        clock.advance(budget)
        return False

    assert not hand_over(a, work_ended)
    assert stored(kube)["spec"]["holderIdentity"] == "a", "not released"
    assert not a.fence.is_open()
    assert not a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew(), "a standby waits the lease out"
    clock.advance(TIMINGS.lease_seconds - TIMINGS.renew_deadline_seconds)
    assert b.try_acquire_or_renew()


@pytest.mark.security
def test_an_exit_at_once_does_not_wait_for_a_stuck_log_handler(tmp_path: Path) -> None:
    """A leader that lost its lease exits even when writing its last log line blocks (a
    full pipe): logging.shutdown() waited for it without a bound."""
    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, threading
            from cleo_operator.cli.run import exit_on_lost_lease

            class Stuck(logging.Handler):
                def emit(self, record):
                    threading.Event().wait()

            logging.getLogger().addHandler(Stuck())
            exit_on_lost_lease()
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], timeout=20, check=False)
    assert done.returncode == 1
    assert time.monotonic() - started < 10
