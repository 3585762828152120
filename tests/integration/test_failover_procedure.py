"""Failovers and switchovers on a real primary/standby pair and the real API server.

What a platform team must be able to rely on: a failover of a lost primary puts the
tenant on the standby (its role writes there, its Secret points there, its pods are new)
and says how long it took; a switchover loses no committed row; a switchover that would
lose data, or a target that is no healthy standby, is refused before anything changes;
and an old primary that comes back never takes the tenant's writes again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.core.times import read_rfc3339
from cleo_operator.failover.fencing import fence_tenant
from cleo_operator.failover.steps import TRACE_ANNOTATION, seconds_between
from cleo_operator.failover.tenant import LOCK_ANNOTATION, PRIMARY_SITE_ANNOTATION
from cleo_operator.failover.workload import HOLD_ANNOTATION, RESTART_ANNOTATION
from cleo_operator.kube.audit import AUDIT_LOGGER
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import EVENT
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.harness.tracing import Spans, traced
from tests.integration.failover_support import (
    DEPLOYMENT,
    PRIMARY,
    REPLICAS,
    STANDBY,
    Setting,
    condition,
    deployment,
    drive_in_spans,
    run_until,
    setting_fixture,
    steps,
    tenant_setting,
    wait_available,
)

pytestmark = RECONCILERS_ALONE

MOVE_STEPS = ["preflight", "fence", "check-lag", "promote", "repoint", "rollout", "verify"]


setting = setting_fixture()


@pytest.fixture
def stuck_setting(
    kube: KubeClient,
    crds_installed: None,
    postgres_replica_pair: tuple[PostgresServer, PostgresServer],
) -> Iterator[Setting]:
    """A tenant whose pods can never be scheduled: a failover's rollout step never ends."""
    del crds_installed
    with tenant_setting(kube, postgres_replica_pair, workload=False) as setting:
        stuck = deployment(setting.namespace, setting.tenant)
        stuck["spec"]["template"]["spec"]["nodeSelector"] = {"cleoai.io/test": "nowhere"}
        kube.apply(stuck)
        yield setting


def snapshot(setting: Setting) -> dict[str, Any]:
    """What a refused failover must leave exactly as it was."""
    dep = setting.deployment()
    return {
        "secret": setting.secret()["metadata"]["resourceVersion"],
        "deployment": dep["metadata"]["resourceVersion"],
        "replicas": dep["spec"]["replicas"],
        "tenant": setting.tenant_annotations(),
        "login": setting.role_can_login(setting.primary),
        "standby": setting.standby.execute("SELECT pg_is_in_recovery()")[0][0],
    }


def test_failover_of_a_lost_primary_moves_the_tenant_and_fences_it_when_it_returns(
    setting: Setting,
) -> None:
    setting.write_rows(100)
    setting.wait_replayed()
    setting.primary.halt()
    with traced() as spans, setting.pools() as pools:
        reconciler = setting.reconciler(pools)
        name = setting.create_failover("Failover", rtoSeconds=60, rpoSeconds=5)
        obj = drive_in_spans(reconciler, setting, name)
        _check_one_trace(spans, obj)
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        recorded = steps(obj)
        assert list(recorded) == MOVE_STEPS
        assert all(s["state"] == "Succeeded" for s in recorded.values()), recorded
        for step in recorded.values():
            started, ended = read_rfc3339(step["startTime"]), read_rfc3339(step["endTime"])
            assert started is not None
            assert ended is not None
            assert started <= ended, step
        # The RTO is what the record says, start to the end of the last step, in ms.
        assert status["newPrimary"] == STANDBY
        assert 0 < status["measuredRTOSeconds"] < 60
        assert status["measuredRTOSeconds"] == pytest.approx(
            seconds_between(status["startTime"], recorded["verify"]["endTime"]), abs=0.002
        )
        assert status["completionTime"] == recorded["verify"]["endTime"]
        # The old primary was gone and no lag had been sampled: the loss is not claimed.
        assert "estimatedRPOBytes" not in status
        assert "estimatedRPOSeconds" not in status
        assert "unknown" in recorded["check-lag"]["message"]
        objectives = condition(obj, "ObjectivesMet")
        assert (objectives["status"], objectives["reason"]) == ("Unknown", "RPOUnknown")
        fenced = condition(obj, "OldPrimaryFenced")
        assert (fenced["status"], fenced["reason"]) == ("False", "Unreachable")
        assert condition(obj, "Succeeded")["status"] == "True"

        # The application's view: its Secret points to the standby, where its role writes.
        values = setting.secret_values()
        assert (values["PGHOST"], values["PGPORT"]) == (
            setting.standby.host,
            str(setting.standby.port),
        )
        assert f":{setting.standby.port}/" in values["DATABASE_URL"]
        with setting.connect_as_tenant() as conn:
            conn.execute("INSERT INTO memories (body) VALUES ('after the failover')")
            assert conn.execute("SELECT count(*) FROM memories").fetchone() == (101,)
        annotations = setting.tenant_annotations()
        assert annotations[PRIMARY_SITE_ANNOTATION] == STANDBY
        assert LOCK_ANNOTATION not in annotations
        # Every pod is new (it read the repointed Secret), the size is what it was.
        dep = setting.deployment()
        assert dep["spec"]["replicas"] == REPLICAS
        assert HOLD_ANNOTATION not in (dep["metadata"].get("annotations") or {})
        assert dep["spec"]["template"]["metadata"]["annotations"][RESTART_ANNOTATION] == name
        wait_available(setting.kube, setting.namespace, REPLICAS)

        # The old primary comes back: the failover fences it, and it takes no writes.
        setting.primary.start()

        def fenced_now() -> bool:
            reconciler.reconcile(setting.namespace, name)
            return condition(setting.failover(name), "OldPrimaryFenced")["status"] == "True"

        wait_for(fenced_now, timeout=30, what="the returning old primary to be fenced")
        assert not setting.role_can_login(setting.primary)
        assert not setting.tenant_can_write(setting.primary)
        setting.primary.restart()
        assert not setting.tenant_can_write(setting.primary)
        assert setting.tenant_can_write(setting.standby)
        # An ended failover with nothing left to do writes nothing more.
        before = setting.failover(name)["metadata"]["resourceVersion"]
        result = reconciler.reconcile(setting.namespace, name)
        assert not result.status_written
        assert result.requeue_after is None
        assert setting.failover(name)["metadata"]["resourceVersion"] == before


def _check_one_trace(spans: Spans, obj: KubeObject) -> None:
    """A failover made by hand is one trace too: its first reconcile's, which it keeps in
    `cleoai.io/traceparent` (written with the procedure's other annotations); every step,
    of that reconcile or a later one, is a child of it."""
    first = spans.named("reconcile CleoFailover")[0]
    assert first.context is not None
    parent = obj["metadata"]["annotations"][TRACE_ANNOTATION]
    assert parent.startswith(f"00-{first.context.trace_id:032x}-{first.context.span_id:016x}-")
    runs = [s for s in spans.finished() if s.name.startswith("failover ")]
    assert {s.name.removeprefix("failover ") for s in runs} == set(MOVE_STEPS)
    for run in runs:
        assert run.parent is not None
        assert run.parent.span_id == first.context.span_id, run.name


def test_switchover_loses_no_committed_row_and_the_old_primary_stays_fenced(
    setting: Setting,
) -> None:
    setting.write_rows(1000)
    committed = 1000
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        # The application, writing one row per transaction until it is cut off.
        nonlocal committed
        try:
            with setting.connect_as_tenant() as conn:
                while not stop.is_set():
                    conn.execute("INSERT INTO memories (body) VALUES ('during')")
                    committed += 1
        except psycopg.Error as error:
            errors.append(type(error).__name__)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_for(lambda: committed > 1100, timeout=30, what="the writer to commit rows")
    with setting.pools() as pools:
        reconciler = setting.reconciler(pools)
        name = setting.create_failover("Switchover", rpoSeconds=0, rtoSeconds=60)
        obj = run_until(reconciler, setting, name)
    stop.set()
    thread.join(timeout=10)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert errors, "the fence did not cut the writer off"
    assert (status["estimatedRPOBytes"], status["estimatedRPOSeconds"]) == (0, 0.0)
    assert condition(obj, "ObjectivesMet")["status"] == "True"
    assert condition(obj, "OldPrimaryFenced")["reason"] == "Fenced"
    # Every committed row is on the new primary; the tenant writes there.
    assert setting.count_rows(setting.standby) == committed
    assert setting.tenant_can_write(setting.standby)
    assert not setting.standby.execute("SELECT pg_is_in_recovery()")[0][0]
    # The old primary is still a primary, but not the tenant's: fenced, also after a restart.
    assert not setting.role_can_login(setting.primary)
    assert not setting.tenant_can_write(setting.primary)
    setting.primary.restart()
    assert not setting.tenant_can_write(setting.primary)
    assert setting.count_rows(setting.primary) == committed


def test_switchover_too_far_behind_is_refused_and_changes_nothing(setting: Setting) -> None:
    setting.standby.execute("SELECT pg_wal_replay_pause()")
    try:
        setting.write_rows(5000)
        before = snapshot(setting)
        with setting.pools() as pools:
            reconciler = setting.reconciler(pools)
            name = setting.create_failover("Switchover", maxLagBytes=1024)
            obj = run_until(reconciler, setting, name)
        status = obj["status"]
        assert status["phase"] == "Failed"
        recorded = steps(obj)
        assert recorded["preflight"]["state"] == "Failed"
        assert "spec.maxLagBytes" in recorded["preflight"]["message"]
        assert all(recorded[s]["state"] == "Pending" for s in MOVE_STEPS[1:])
        failed = condition(obj, "Succeeded")
        assert (failed["status"], failed["reason"]) == ("False", "LagTooHigh")
        assert snapshot(setting) == before
        assert setting.tenant_can_write(setting.primary)
    finally:
        setting.standby.execute("SELECT pg_wal_replay_resume()")


def test_a_target_that_is_not_a_standby_of_the_primary_is_refused(
    kube: KubeClient,
    crds_installed: None,
    postgres_replica_pair: tuple[PostgresServer, PostgresServer],
    postgres_server: PostgresServer,
) -> None:
    del crds_installed
    # The session server is a healthy PostgreSQL, but another database cluster entirely.
    with tenant_setting(kube, postgres_replica_pair, extra_sites={"other": postgres_server}) as (
        setting
    ):
        before = snapshot(setting)
        with setting.pools() as pools:
            reconciler = setting.reconciler(pools)
            name = setting.create_failover("Failover", targetSite="other")
            obj = run_until(reconciler, setting, name)
        assert obj["status"]["phase"] == "Failed"
        assert condition(obj, "Succeeded")["reason"] == "NotAStandby"
        assert "system identifiers differ" in steps(obj)["preflight"]["message"]
        assert snapshot(setting) == before


def test_a_dry_run_writes_the_plan_and_changes_nothing(
    setting: Setting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    before = snapshot(setting)
    with setting.pools() as pools:
        reconciler = setting.reconciler(pools)
        name = setting.create_failover("Switchover", dryRun=True)
        obj = run_until(reconciler, setting, name)
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    assert condition(obj, "Succeeded")["reason"] == "DryRun"
    plan = "\n".join(status["plan"])
    assert f"from {REPLICAS} replica(s) to 0" in plan
    assert f"pg_promote site {STANDBY!r}" in plan
    assert f"{setting.standby.host}:{setting.standby.port}" in plan
    assert [s["state"] for s in status["steps"]] == ["Succeeded"] + ["Skipped"] * 6
    assert "newPrimary" not in status
    assert "measuredRTOSeconds" not in status
    assert snapshot(setting) == before
    # Started and ended: on the audit trail (a line each) and Events on the CleoFailover.
    trail = [r.__dict__["action"] for r in caplog.records if getattr(r, "audit", False)]
    assert trail == ["FailoverStarted", "FailoverSucceeded"]
    events = {
        e["reason"]
        for e in setting.kube.list(EVENT, namespace=setting.namespace)
        if e["involvedObject"]["kind"] == "CleoFailover" and e["involvedObject"]["name"] == name
    }
    assert events == {"FailoverStarted", "FailoverSucceeded"}


def test_a_failover_of_a_primary_that_still_answers_fences_it_first(setting: Setting) -> None:
    setting.write_rows(300)
    with setting.pools() as pools:
        reconciler = setting.reconciler(pools)
        name = setting.create_failover("Failover", rpoSeconds=5)
        obj = run_until(reconciler, setting, name)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    # It answered: fenced at once, and the standby was given time to receive everything.
    assert condition(obj, "OldPrimaryFenced")["reason"] == "Fenced"
    assert status["estimatedRPOBytes"] == 0
    assert condition(obj, "ObjectivesMet")["status"] == "True"
    assert setting.count_rows(setting.standby) == 300
    assert not setting.tenant_can_write(setting.primary)
    assert setting.tenant_can_write(setting.standby)


def test_two_failovers_of_one_tenant_never_run_at_once(stuck_setting: Setting) -> None:
    setting = stuck_setting
    with setting.pools() as pools:
        reconciler = setting.reconciler(pools, wait_slice_seconds=0.5)
        first = setting.create_failover("Switchover")
        while steps(setting.failover(first)).get("rollout", {}).get("state") != "Running":
            result = reconciler.reconcile(setting.namespace, first)
            assert result.phase == "Running", steps(setting.failover(first))
        assert setting.tenant_annotations()[LOCK_ANNOTATION].startswith(first + "/")

        second = setting.create_failover("Failover")
        refused = run_until(reconciler, setting, second)
        assert refused["status"]["phase"] == "Failed"
        assert condition(refused, "Succeeded")["reason"] == "FailoverInProgress"
        assert first in steps(refused)["preflight"]["message"]
        assert setting.tenant_annotations()[LOCK_ANNOTATION].startswith(first + "/")

        # The pods can run again: the first one finishes, and lets the tenant go.
        setting.kube.apply(deployment(setting.namespace, setting.tenant))
        done = run_until(reconciler, setting, first)
        assert done["status"]["phase"] == "Succeeded"
        assert LOCK_ANNOTATION not in setting.tenant_annotations()
        dep = setting.kube.get(DEPLOYMENT, "cleoai", namespace=setting.namespace)
        assert dep is not None
        assert dep["spec"]["replicas"] == REPLICAS


def test_a_failover_to_an_already_promoted_standby_needs_the_tenant_fenced(
    setting: Setting,
) -> None:
    setting.write_rows(10)
    setting.wait_replayed()
    # The standby was promoted behind the operator's back; the tenant still writes on the
    # old primary, so moving it would lose those writes: refused.
    setting.standby.execute("SELECT pg_promote(wait => true)")
    setting.write_rows(5, server=setting.primary)
    before = snapshot(setting)
    with setting.pools() as pools:
        reconciler = setting.reconciler(pools)
        refused = run_until(reconciler, setting, setting.create_failover("Failover"))
        assert refused["status"]["phase"] == "Failed"
        assert condition(refused, "Succeeded")["reason"] == "NotAStandby"
        assert snapshot(setting) == before

        # What a failover that stopped after promoting leaves behind: the tenant fenced on
        # the old primary. Then the move is finished, without promoting twice.
        fence_tenant(pools, PRIMARY, tenant=setting.tenant)
        done = run_until(reconciler, setting, setting.create_failover("Failover"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert "already was a primary" in steps(done)["promote"]["message"]
    assert setting.tenant_can_write(setting.standby)
    assert setting.count_rows(setting.standby) == 10
    assert not setting.tenant_can_write(setting.primary)
    assert setting.deployment()["spec"]["replicas"] == REPLICAS


def test_two_drivers_of_one_failover_finish_it_once(setting: Setting) -> None:
    # The operator's daemon and `cleo-operator failover run` on someone's laptop, at once.
    setting.write_rows(200)
    name = setting.create_failover("Switchover")
    results: list[str | None] = []
    errors: list[BaseException] = []

    def driver() -> None:
        try:
            with setting.pools() as pools:
                results.append(setting.reconciler(pools).drive(setting.namespace, name).phase)
        except BaseException as error:  # reported below, with the test's assertion
            errors.append(error)

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert results == ["Succeeded", "Succeeded"]
    obj = setting.failover(name)
    assert all(s["state"] == "Succeeded" for s in steps(obj).values()), steps(obj)
    assert obj["status"]["estimatedRPOBytes"] == 0
    assert setting.count_rows(setting.standby) == 200
    assert setting.tenant_can_write(setting.standby)
    assert not setting.tenant_can_write(setting.primary)
    assert setting.deployment()["spec"]["replicas"] == REPLICAS
    assert LOCK_ANNOTATION not in setting.tenant_annotations()


def test_a_failover_that_fails_after_promotion_still_fences_the_returning_primary(
    stuck_setting: Setting,
) -> None:
    setting = stuck_setting
    setting.primary.halt()
    with setting.pools() as pools:
        reconciler = setting.reconciler(pools, rollout_timeout_seconds=1.0, wait_slice_seconds=0.5)
        name = setting.create_failover("Failover")
        obj = run_until(reconciler, setting, name)
        assert obj["status"]["phase"] == "Failed"
        failed = condition(obj, "Succeeded")
        assert failed["reason"] == "RolloutTimeout"
        assert "did not become available" in failed["message"]
        assert "runbook" in failed["message"]
        # The database did move: the tenant writes on the new primary.
        assert steps(obj)["repoint"]["state"] == "Succeeded"
        assert setting.tenant_can_write(setting.standby)
        assert LOCK_ANNOTATION not in setting.tenant_annotations()

        setting.primary.start()

        def fenced_now() -> bool:
            result = reconciler.reconcile(setting.namespace, name)
            assert result.phase == "Failed"
            return condition(setting.failover(name), "OldPrimaryFenced")["status"] == "True"

        wait_for(fenced_now, timeout=30, what="the returning old primary to be fenced")
        assert not setting.tenant_can_write(setting.primary)
