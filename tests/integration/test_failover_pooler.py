"""A failover of a tenant whose workload goes through its pooler, on the real API server, a
real primary/standby pair and a real ``pgbouncer``.

The failover reconciler and the pooler part run in this process (the tenant reconcile's
part, called as the operator calls it after the database part); the API server's
controllers and KWOK run the Deployments. KWOK runs no container, so the pooler's pod is
played by a local ``pgbouncer`` started from the pooler Secret the part wrote (only the
listen address and config folder rewritten, tests/harness/pgbouncer.py), and started again
from the new Secret when the Deployment rolls, as a new pod would be. The part's
``PoolerReady`` check logs in through that process.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.data.tenant_db import tenant_role_name
from cleo_operator.failover.workload import HOLD_ANNOTATION
from cleo_operator.kube.kinds import DEPLOYMENT, SECRET, TENANT
from cleo_operator.reconcile.database import DatabaseSettings, TenantDatabases
from cleo_operator.reconcile.pooler import CONDITION_TYPE, PoolerPart
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext
from cleo_operator.render.pooler import CLIENT_PASSWORD_KEY, POOLER_NAME
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.pgbouncer import PgBouncer, running_pgbouncer
from tests.integration.failover_support import (
    REPLICAS,
    STANDBY,
    Setting,
    setting_fixture,
    steps,
    wait_available,
)
from tests.integration.tenant_database_support import connect_with_secret

pytestmark = RECONCILERS_ALONE

setting = setting_fixture()


class Pooler:
    """The pooler part, and a local pgbouncer as its one pod."""

    def __init__(self, setting: Setting, databases: TenantDatabases) -> None:
        self.setting = setting
        self.bouncer: PgBouncer | None = None
        self.part = PoolerPart(
            setting.kube,
            databases,
            operator_namespace=setting.operator_namespace,
            address=self._address,
        )

    def _address(self, service: dict[str, Any]) -> tuple[str, int]:
        """Where the check goes instead of the Service's cluster IP (no kube-proxy here);
        the part calls it only with the Service it verified as its own."""
        assert service["metadata"]["namespace"] == self.setting.namespace
        assert self.bouncer is not None, "no pooler process runs"
        return self.bouncer.host, self.bouncer.port

    def reconcile(self) -> PartResult:
        """The part as the tenant reconcile runs it; what it renders is applied."""
        obj = self.setting.tenant_object()
        ctx = TenantContext(
            name=self.setting.tenant,
            uid=self.setting.uid,
            generation=int(obj["metadata"].get("generation", 1)),
            spec=parse_tenant_spec(obj["spec"]),
            namespace=self.setting.namespace,
            annotations=dict(obj["metadata"].get("annotations") or {}),
            status={},
            now=datetime.datetime.now(datetime.UTC),
        )
        result = self.part.reconcile(ctx)
        for rendered in result.objects:
            self.setting.kube.apply(rendered)
        return result

    def files(self) -> dict[str, str]:
        """The pooler Secret's files, as the pod mounts them."""
        secret = self.setting.kube.get(SECRET, POOLER_NAME, namespace=self.setting.namespace)
        assert secret is not None
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    def rolled(self) -> bool:
        """The Deployment's controller rolled it (KWOK ran the new pod)."""
        live = self.setting.kube.get(DEPLOYMENT, POOLER_NAME, namespace=self.setting.namespace)
        status = (live or {}).get("status") or {}
        return (
            live is not None
            and status.get("observedGeneration", 0) >= live["metadata"]["generation"]
            and status.get("updatedReplicas") == status.get("availableReplicas") == 1
            and status.get("replicas") == 1
        )

    def connect(self) -> psycopg.Connection[Any]:
        """A client of the pooler, as a workload pod connects: with the pooler's client
        credential (from its Secret, as the workload's DATABASE_URL has it), over TLS."""
        assert self.bouncer is not None
        role = tenant_role_name(self.setting.tenant)
        return connect_with_secret(
            {
                "PGHOST": self.bouncer.host,
                "PGPORT": str(self.bouncer.port),
                "PGSSLMODE": "require",
                "PGDATABASE": role,
                "PGUSER": role,
                "PGPASSWORD": self.files()[CLIENT_PASSWORD_KEY],
            }
        )


@pytest.fixture
def pooler(setting: Setting) -> Iterator[Pooler]:
    setting.kube.patch_merge(
        TENANT,
        setting.tenant,
        {"spec": {"database": {"pooler": {"enabled": True, "replicas": 1, "poolSize": 2}}}},
    )
    with contextlib.closing(
        TenantDatabases.from_environment(
            setting.kube,
            environ={"CLEO_SITES": setting.sites_yaml},
            settings=DatabaseSettings(wait_seconds=30.0),
        )
    ) as databases:
        made = Pooler(setting, databases)
        made.reconcile()
        with running_pgbouncer(made.files()) as bouncer:
            made.bouncer = bouncer
            yield made


def condition(result: PartResult) -> tuple[str, str]:
    observed = result.conditions[CONDITION_TYPE]
    return observed.status, observed.reason


def test_a_failover_repoints_the_pooler_and_the_writers_wait_for_it(
    setting: Setting, pooler: Pooler
) -> None:
    wait_for(pooler.rolled, timeout=60, what="the pooler's pod")
    assert condition(pooler.reconcile()) == ("True", "Serving")
    setting.write_rows(10)
    held = pooler.connect()
    held.execute("INSERT INTO memories (body) VALUES ('through the pooler')")
    setting.wait_replayed()

    with setting.pools() as pools:
        reconciler = setting.reconciler(pools)
        name = setting.create_failover("Failover")

        def rollout_waits() -> bool:
            reconciler.reconcile(setting.namespace, name)
            return steps(setting.failover(name)).get("rollout", {}).get("state") == "Running"

        wait_for(rollout_waits, timeout=90, interval=0.3, what="the rollout step to wait")
        # The database moved, the pooler still goes to the fenced old primary: the writers
        # stay at zero, and the step says why.
        rollout = steps(setting.failover(name))["rollout"]
        assert "pooler" in rollout["message"]
        workload = setting.deployment()
        assert workload["spec"]["replicas"] == 0
        assert HOLD_ANNOTATION in workload["metadata"]["annotations"]
        # A client of the old pooler process gets no write to the fenced primary (PgBouncer
        # keeps it waiting for a server connection; it fails when that process goes).
        stale: list[BaseException | None] = []

        def write_through_the_old_pooler() -> None:
            try:
                held.execute("INSERT INTO memories (body) VALUES ('to the fenced primary')")
                stale.append(None)
            except psycopg.Error as exc:
                stale.append(exc)

        writer = threading.Thread(target=write_through_the_old_pooler, daemon=True)
        writer.start()

        # The tenant reconcile renders the pooler for the new site; not ready until rolled.
        assert condition(pooler.reconcile()) == ("False", "Rolling")
        assert (
            f"host={setting.standby.host} port={setting.standby.port} "
            in (pooler.files()["pgbouncer.ini"])
        )
        reconciler.reconcile(setting.namespace, name)
        assert setting.deployment()["spec"]["replicas"] == 0

        # The new pod runs the new configuration: the pooler serves, then the writers come.
        wait_for(pooler.rolled, timeout=60, what="the pooler to roll")
        assert pooler.bouncer is not None
        pooler.bouncer.restart(pooler.files())
        writer.join(timeout=10)
        (failed,) = stale
        assert failed is not None, "a write went through the old pooler"
        held.close()
        ready = pooler.reconcile()
        assert condition(ready) == ("True", "Serving")
        assert f"on site {STANDBY}" in ready.conditions[CONDITION_TYPE].message
        result = reconciler.drive(setting.namespace, name, timeout=90)
        assert result.phase == "Succeeded", result
        wait_available(setting.kube, setting.namespace, REPLICAS)

    with pooler.connect() as conn:
        conn.execute("INSERT INTO memories (body) VALUES ('after the failover')")
    assert setting.count_rows(setting.standby) == 12
    assert not setting.tenant_can_write(setting.primary)
