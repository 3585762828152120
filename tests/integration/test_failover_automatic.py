"""Automatic failover: a primary lost for longer than failoverDelay gets exactly one
CleoFailover, which moves the tenant; a primary that answers never does.

The check is called the way the tenant reconcile calls it (again after ``requeue_after``),
against a real primary that is really stopped.
"""

from __future__ import annotations

import contextlib
import time

from psycopg import sql

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.failover.automatic import (
    AUTOMATIC_LABEL,
    UNAVAILABLE_SINCE_ANNOTATION,
    AutomaticFailover,
    AutomaticOutcome,
    AutomaticSettings,
)
from cleo_operator.failover.samples import LAG_ANNOTATION, LagSample, LagSamples
from cleo_operator.failover.steps import TRACE_ANNOTATION
from cleo_operator.observability.tracing import reconcile_span
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.tracing import Spans, traced
from tests.integration.failover_support import (
    FAILOVER,
    PRIMARY,
    STANDBY,
    Setting,
    drive_in_spans,
    setting_fixture,
    steps,
)

pytestmark = RECONCILERS_ALONE

DELAY = 3.0


setting = setting_fixture(failover={"automatic": True, "failoverDelay": f"{DELAY:.0f}s"})


def tenant_spec(setting: Setting) -> CleoTenantSpec:
    return parse_tenant_spec(setting.tenant_object()["spec"])


def check(auto: AutomaticFailover, setting: Setting) -> AutomaticOutcome:
    """One tenant reconcile's call, with the tenant as it is now (in its reconcile span)."""
    with reconcile_span("CleoTenant", setting.tenant):
        return auto.check(
            tenant=setting.tenant,
            namespace=setting.namespace,
            spec=tenant_spec(setting),
            annotations=setting.tenant_annotations(),
        )


def failovers(setting: Setting) -> list[str]:
    return sorted(
        o["metadata"]["name"] for o in setting.kube.list(FAILOVER, namespace=setting.namespace)
    )


def test_a_lost_primary_gets_exactly_one_failover_after_the_delay(setting: Setting) -> None:
    with traced() as spans, setting.pools() as pools:
        samples = LagSamples()
        with contextlib.closing(
            AutomaticFailover(
                setting.kube,
                pools,
                settings=AutomaticSettings(
                    probe_interval_seconds=0.2, wait_seconds=2.0, sample_interval_seconds=0.0
                ),
                lag_samples=samples,
            )
        ) as auto:
            healthy = check(auto, setting)
            assert healthy.condition is not None
            assert healthy.condition.reason == "PrimaryAvailable"
            assert healthy.created is None
            sample = samples.latest(PRIMARY)
            assert sample is not None
            assert sample.bytes is not None  # the standby streams: the lag is known

            setting.primary.halt()
            lost = time.monotonic()
            seen: list[str] = []
            while True:
                outcome = check(auto, setting)
                assert outcome.condition is not None
                seen.append(outcome.condition.reason)
                if outcome.created:
                    break
                assert failovers(setting) == []
                assert time.monotonic() - lost < DELAY + 10, seen
                # As often as asked, and at least every half second (a healthy primary asks
                # for 30 s; the first call may still see the answer from before the halt).
                time.sleep(min(outcome.requeue_after or 0.1, 0.5))
            waited = time.monotonic() - lost
            assert DELAY <= waited < DELAY + 5, (waited, seen)
            assert "PrimaryUnavailable" in seen
            assert set(seen[:-1]) <= {"PrimaryAvailable", "PrimaryUnavailable", "Checking"}

            # Exactly one, and it says what it is and why.
            assert failovers(setting) == [outcome.created]
            created = setting.failover(outcome.created)
            assert created["spec"] == {
                "tenant": setting.tenant,
                "type": "Failover",
                "targetSite": STANDBY,
                "dryRun": False,  # the API server's default
            }
            assert created["metadata"]["labels"][AUTOMATIC_LABEL] == "true"
            assert created["metadata"]["labels"]["cleoai.io/tenant"] == setting.tenant
            annotations = created["metadata"]["annotations"]
            assert UNAVAILABLE_SINCE_ANNOTATION in annotations
            stamped = LagSample.from_annotation(annotations[LAG_ANNOTATION])
            assert stamped is not None
            assert stamped.site == PRIMARY
            for _ in range(5):
                again = check(auto, setting)
                assert again.created is None
                assert again.condition is not None
                assert again.condition.reason in ("FailoverCreated", "FailoverInProgress")
                time.sleep(0.2)
            assert failovers(setting) == [outcome.created]

            # The operator runs it like any failover; a fresh process's memory is empty,
            # so its RPO estimate can only come from the sample stamped on the object.
            reconciler = setting.reconciler(pools, lag_samples=LagSamples())
            done = drive_in_spans(reconciler, setting, outcome.created)
            status = done["status"]
            assert status["phase"] == "Succeeded", status
            assert status["estimatedRPOBytes"] == stamped.bytes
            assert "sampled at" in steps(done)["check-lag"]["message"]
            assert setting.tenant_can_write(setting.standby)

            # The standby is the primary now: nothing to fail over to, nothing created.
            after = check(auto, setting)
            assert after.condition is not None
            assert after.condition.reason == "NoStandby"
            assert failovers(setting) == [outcome.created]
        _check_one_trace(spans, created, outcome.created)


def _check_one_trace(spans: Spans, created: KubeObject, name: str) -> None:
    """The failover is one trace: the tenant reconcile that detected the outage, its
    `failover detected`, then every step's span, each linked to the reconcile that ran it."""
    (detected,) = spans.named("failover detected")
    parent = created["metadata"]["annotations"][TRACE_ANNOTATION]
    assert detected.context is not None
    assert parent.startswith(
        f"00-{detected.context.trace_id:032x}-{detected.context.span_id:016x}-"
    )
    reconciles = {s.context.span_id: s for s in spans.named("reconcile CleoTenant") if s.context}
    assert detected.parent is not None
    assert detected.parent.span_id in reconciles
    steps_run = [
        s for s in spans.finished() if s.name.startswith("failover ") and s is not detected
    ]
    assert {s.name for s in steps_run} >= {
        "failover preflight",
        "failover fence",
        "failover check-lag",
        "failover promote",
        "failover repoint",
        "failover rollout",
        "failover verify",
    }
    failover_reconciles = {
        s.context.span_id for s in spans.named("reconcile CleoFailover") if s.context
    }
    for step in steps_run:
        assert step.context is not None
        assert step.context.trace_id == detected.context.trace_id, step.name
        assert step.parent is not None
        assert step.parent.span_id == detected.context.span_id
        assert dict(step.attributes or {})["cleo.failover"] == name
        assert [link.context.span_id for link in step.links][:1] != []
        assert step.links[0].context.span_id in failover_reconciles
    (verify,) = [s for s in steps_run if s.name == "failover verify"]
    assert dict(verify.attributes or {})["cleo.step_state"] == "Succeeded"


def test_a_primary_that_answers_never_fails_over(setting: Setting) -> None:
    with setting.pools() as pools:
        with contextlib.closing(
            AutomaticFailover(
                setting.kube,
                pools,
                settings=AutomaticSettings(probe_interval_seconds=0.1, wait_seconds=2.0),
            )
        ) as auto:
            deadline = time.monotonic() + DELAY + 1
            while time.monotonic() < deadline:
                outcome = check(auto, setting)
                assert outcome.condition is not None
                assert outcome.condition.reason == "PrimaryAvailable"
                time.sleep(0.2)
            # A primary that answers but refuses the admin is no outage either.
            with setting.primary.connect() as conn:
                conn.execute("ALTER ROLE postgres PASSWORD 'not-the-one-the-operator-has'")
                try:
                    pools.reset(PRIMARY)  # new logins from now on
                    deadline = time.monotonic() + DELAY + 1
                    while time.monotonic() < deadline:
                        outcome = check(auto, setting)
                        assert outcome.condition is not None
                        assert outcome.condition.reason == "PrimaryAvailable"
                        time.sleep(0.2)
                    assert pools.breaker_state(PRIMARY) == "closed"
                finally:
                    conn.execute(
                        sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                            sql.Literal(setting.primary.password)
                        )
                    )
        assert failovers(setting) == []
