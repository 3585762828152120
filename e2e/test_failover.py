"""Failover end to end, as separate processes: killed at every step, resumed, finished.

The failover runs as its own process (``python -m cleo_operator.cli failover run``, the
``cleo-operator failover run`` command, until the operator process registers the
CleoFailover daemon) with the kubeconfig and the site configuration the operator has. A
fault point makes it SIGKILL itself right after a step has acted and before the step's
outcome is on status, the worst moment; a second process must find the step Running, do
it again (idempotently) and finish, with nothing done twice and nothing lost. Nothing
either process prints holds a password.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cleo_operator.failover.faults import FAULT_POINT_ENV
from cleo_operator.failover.steps import MOVE_STEPS
from cleo_operator.failover.tenant import LOCK_ANNOTATION, PRIMARY_SITE_ANNOTATION
from e2e.cluster import LocalCluster
from tests.integration.failover_support import (
    REPLICAS,
    STANDBY,
    Setting,
    condition,
    setting_fixture,
    steps,
    wait_available,
)

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.usefixtures("without_session_operator"),
]

REPO = Path(__file__).resolve().parent.parent


setting = setting_fixture()


def failover_run(
    cluster: LocalCluster, setting: Setting, name: str, *, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``cleo-operator failover run NS NAME`` as its own process."""
    env = {**cluster.env(), "CLEO_SITES": setting.sites_yaml}
    env.pop(FAULT_POINT_ENV, None)
    if fault is not None:
        env[FAULT_POINT_ENV] = fault
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cleo_operator.cli",
            "failover",
            "run",
            setting.namespace,
            name,
            "--timeout",
            "120",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def secrets_of(setting: Setting) -> list[str]:
    values = setting.secret_values()
    return [values["PGPASSWORD"], setting.primary.password]


@pytest.mark.parametrize("step", MOVE_STEPS)
def test_a_switchover_killed_after_any_step_resumes_and_finishes(
    cluster: LocalCluster, setting: Setting, step: str
) -> None:
    setting.write_rows(500)
    name = setting.create_failover("Switchover")
    killed = failover_run(cluster, setting, name, fault=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    interrupted = steps(setting.failover(name))
    # The step acted, but its outcome never reached status: the record says Running.
    assert interrupted[step]["state"] == "Running", interrupted
    before = MOVE_STEPS[: MOVE_STEPS.index(step)]
    assert all(interrupted[s]["state"] == "Succeeded" for s in before), interrupted

    resumed = failover_run(cluster, setting, name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    obj = setting.failover(name)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    recorded = steps(obj)
    assert all(s["state"] == "Succeeded" for s in recorded.values()), recorded
    # The resumed step kept its first start time: the crash is part of the measured RTO.
    assert recorded[step]["startTime"] == interrupted[step]["startTime"]
    assert status["measuredRTOSeconds"] > 0
    assert status["estimatedRPOBytes"] == 0
    assert condition(obj, "OldPrimaryFenced")["reason"] == "Fenced"

    # Nothing lost, nothing done twice: every row, the Deployment at its old size.
    assert setting.count_rows(setting.standby) == 500
    assert setting.tenant_can_write(setting.standby)
    assert not setting.tenant_can_write(setting.primary)
    annotations = setting.tenant_annotations()
    assert annotations[PRIMARY_SITE_ANNOTATION] == STANDBY
    assert LOCK_ANNOTATION not in annotations
    assert setting.deployment()["spec"]["replicas"] == REPLICAS
    wait_available(setting.kube, setting.namespace, REPLICAS)
    for output in (killed.stdout, killed.stderr, resumed.stdout, resumed.stderr):
        for secret in secrets_of(setting):
            assert secret not in output


def test_a_failover_of_a_lost_primary_by_command(cluster: LocalCluster, setting: Setting) -> None:
    setting.write_rows(100)
    setting.wait_replayed()
    setting.primary.halt()
    name = setting.create_failover("Failover", rtoSeconds=30)
    done = failover_run(cluster, setting, name)
    assert done.returncode == 0, done.stderr[-3000:]
    obj = setting.failover(name)
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["measuredRTOSeconds"] < 30
    assert "succeeded" in done.stderr + done.stdout
    assert setting.count_rows(setting.standby) == 100
    with setting.connect_as_tenant() as conn:
        conn.execute("INSERT INTO memories (body) VALUES ('served by the new primary')")
    for secret in secrets_of(setting):
        assert secret not in done.stdout + done.stderr
