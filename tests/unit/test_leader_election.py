"""The leader election's decisions (kube/leader.py) with a fake clock, on FakeKube.

What is judged here is the pure logic: when a replica may take the Lease (free, expired by
its own clock since it last saw the record change, never by comparing clocks), optimistic
concurrency (a 409 means another won), the renew deadline that closes the write fence by
the clock alone, and the release. The processes, the real API server and the timings end
to end are e2e/test_leader_election.py's.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from cleo_operator.cli.root import build_parser
from cleo_operator.cli.run import StartupError, election_timings, replica_identity, user_agent
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.fence import NOT_LEADER, WriteFence
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
