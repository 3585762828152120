"""The pooler after a failover: re-rendered for the new primary's site, rolled, judged.

The failover moves the tenant's primary-site annotation (``failover.tenant``); the pooler
part must then render the new site's host, port, TLS mode and CA, roll the pooler, and not
claim ``PoolerReady`` while the pods still run the configuration of the old, fenced site.
Judged on the in-memory API server (FakeKube, a fake of that boundary only) with the real
part, rendering and site configuration; the login through the pooler is the one thing
replaced (`Logins`: the network login to a pod that cannot run here; the real check runs
against a real pgbouncer in tests/integration/test_pooler.py).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.failover import parse_failover_spec
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.data.pool import SitePools
from cleo_operator.data.sites import AdminCredentials, SiteConfig
from cleo_operator.failover.pooler import pooler_route, pooler_server
from cleo_operator.failover.procedure import (
    SOURCE_ANNOTATION,
    TARGET_ANNOTATION,
    FailoverSettings,
    Move,
    Procedure,
)
from cleo_operator.failover.steps import StepRecord
from cleo_operator.failover.tenant import PRIMARY_SITE_ANNOTATION
from cleo_operator.failover.workload import HOLD_ANNOTATION, REPLICAS_ANNOTATION
from cleo_operator.kube.kinds import DEPLOYMENT, SECRET
from cleo_operator.reconcile.pooler import CONDITION_TYPE, PoolerPart
from cleo_operator.reconcile.tenant_databases import TenantDatabases
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext
from cleo_operator.render.child import WORKLOAD_NAME
from cleo_operator.render.pooler import CA_KEY, INI_KEY, POOLER_HASH_ANNOTATION
from tests.harness.fake_kube import FakeKube
from tests.harness.postgres_tls import make_authority
from tests.harness.specs import tenant_manifest
from tests.unit.reconcile.test_pooler_part import (
    NOW,
    NS,
    SITE,
    TENANT,
    UID,
    Logins,
    deployment_as_the_controller_reports,
    kube,
    part,
    service_as_the_api_server_allocates,
    write_credentials,
)

__all__ = ["kube"]  # the in-memory API server fixture, shared with the pooler part's tests


@pytest.fixture(scope="module")
def standby(tmp_path_factory: pytest.TempPathFactory) -> SiteConfig:
    """The standby site: another server, verified against a CA of its own."""
    pem = make_authority(tmp_path_factory.mktemp("standby-ca"), "standby").cert.read_text()
    return SiteConfig(
        name="standby",
        host="pg-standby.example.internal",
        port=6543,
        sslmode="verify-full",
        ssl_root_cert="/unused-here",
        ca_pem=pem,
    )


@pytest.fixture
def databases(kube: FakeKube, standby: SiteConfig) -> Iterator[TenantDatabases]:
    credentials = AdminCredentials(user="admin", password="unused-here")
    pools = SitePools({"main": SITE, "standby": standby}, credentials=lambda _site: credentials)
    yield TenantDatabases(kube, pools)
    pools.close()


def context(primary: str | None) -> TenantContext:
    database = {"enabled": True, "site": "main"}
    return TenantContext(
        name=TENANT,
        uid=UID,
        generation=1,
        spec=parse_tenant_spec(
            {"database": {**database, "pooler": {"enabled": True, "replicas": 1}}}
        ),
        namespace=NS,
        annotations={PRIMARY_SITE_ANNOTATION: primary} if primary else {},
        status={},
        now=NOW,
    )


def rendered(result: PartResult, kind: str) -> dict[str, Any]:
    return next(o for o in result.objects if o["kind"] == kind)


def config_hash(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"][POOLER_HASH_ANNOTATION])


def secret_text(secret: dict[str, Any], key: str) -> str:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def test_a_moved_primary_re_renders_the_pooler_and_it_is_not_ready_until_rolled(
    kube: FakeKube, databases: TenantDatabases, standby: SiteConfig
) -> None:
    write_credentials(kube)
    logins = Logins()
    pooler = part(kube, databases, logins)
    before = pooler.reconcile(context(None))
    service_as_the_api_server_allocates(kube, before.objects)
    old = rendered(before, "Deployment")
    deployment_as_the_controller_reports(kube, old, available=1)
    serving = pooler.reconcile(context(None))
    assert serving.conditions[CONDITION_TYPE].status == "True"
    assert "on site main" in serving.conditions[CONDITION_TYPE].message
    old_ini = secret_text(rendered(serving, "Secret"), INI_KEY)
    assert f"host={SITE.host} port={SITE.port}" in old_ini
    logins.calls.clear()

    # The failover moved the primary: the pooler is rendered for the standby's site.
    moved = pooler.reconcile(context("standby"))
    secret = rendered(moved, "Secret")
    ini = secret_text(secret, INI_KEY)
    assert f"host={standby.host} port={standby.port}" in ini
    assert SITE.host not in ini
    assert "server_tls_sslmode = verify-full" in ini
    assert "server_tls_ca_file = " in ini
    assert secret_text(secret, CA_KEY) == standby.ca_pem
    new = rendered(moved, "Deployment")
    assert config_hash(new) != config_hash(old)
    # The pods still run the old site's configuration: not ready, and no login claimed.
    condition = moved.conditions[CONDITION_TYPE]
    assert (condition.status, condition.reason) == ("False", "Rolling")
    assert logins.calls == []
    assert moved.requeue_after is not None

    # Rolled: ready again, through the new site.
    deployment_as_the_controller_reports(kube, new, available=1)
    ready = pooler.reconcile(context("standby"))
    assert ready.conditions[CONDITION_TYPE].status == "True"
    assert "on site standby" in ready.conditions[CONDITION_TYPE].message
    assert len(logins.calls) == 1
    # The workload's route (the pooler's Service, its client credential) did not change:
    # only the pooler rolls for a failover, the workload keeps its pods.
    assert ready.fingerprints == serving.fingerprints
    assert set(ready.fingerprints) == {"pooler", "database"}  # the names, not the site


# -- the failover's rollout step: the writers wait for the pooler --------------------------


def workload(kube: FakeKube) -> None:
    """The CleoAI Deployment as the fence step left it: at zero, held by the failover."""
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": WORKLOAD_NAME,
                "namespace": NS,
                "annotations": {HOLD_ANNOTATION: "move-1", REPLICAS_ANNOTATION: "2"},
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "cleoai"}},
                "template": {"metadata": {"labels": {"app": "cleoai"}}, "spec": {}},
            },
        }
    )


@dataclasses.dataclass
class Scene:
    """A tenant with a pooler on site main, its workload held by failover ``move-1`` to the
    standby, and the failover's rollout step started at NOW."""

    pooler: PoolerPart
    first: PartResult
    move: Move
    record: StepRecord

    def rollout(self, kube: FakeKube, databases: TenantDatabases, *, at: datetime.datetime) -> Any:
        # No deployment controller here: the step does not wait for the workload's new pods.
        settings = FailoverSettings(wait_slice_seconds=0.0)
        procedure = Procedure(kube, databases.pools, settings=settings, now=lambda: at)
        return procedure.run(self.move, self.record)


def scene(kube: FakeKube, databases: TenantDatabases) -> Scene:
    write_credentials(kube)
    database = {"enabled": True, "site": "main", "pooler": {"enabled": True}}
    kube.create(tenant_manifest(TENANT, {"database": database}))
    pooler = PoolerPart(
        kube,
        databases,
        operator_namespace="cleo-system",
        check=Logins(),
        address=lambda _: ("p", 1),
    )
    first = pooler.reconcile(context(None))
    for obj in first.objects:
        kube.apply(obj)
    workload(kube)
    failover = parse_failover_spec({"tenant": TENANT, "type": "Failover"})
    sites = {SOURCE_ANNOTATION: "main", TARGET_ANNOTATION: "standby"}
    move = Move(name="move-1", namespace=NS, uid="f0", spec=failover, annotations=sites)
    record = StepRecord(name="rollout")
    record.start(NOW)
    return Scene(pooler=pooler, first=first, move=move, record=record)


def held(kube: FakeKube) -> bool:
    live = kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=NS)
    assert live is not None
    return HOLD_ANNOTATION in live["metadata"].get("annotations", {})


def test_the_writers_come_back_only_once_the_pooler_goes_to_the_new_primary(
    kube: FakeKube, databases: TenantDatabases, standby: SiteConfig
) -> None:
    made = scene(kube, databases)
    deployment_as_the_controller_reports(kube, rendered(made.first, "Deployment"), available=1)

    # The pooler still goes to the old primary: the writers stay at zero.
    waiting = made.rollout(kube, databases, at=NOW)
    assert waiting.state == "Running"
    assert "does not point to site 'standby'" in waiting.message
    assert held(kube)

    # The tenant reconcile renders it for the new site; its pods are not rolled yet.
    moved = made.pooler.reconcile(context("standby"))
    for obj in moved.objects:
        kube.apply(obj)
    not_rolled = made.rollout(kube, databases, at=NOW)
    assert not_rolled.state == "Running"
    assert "not yet rolled" in not_rolled.message
    assert held(kube)

    # Rolled, but no pod of it available yet: still waiting.
    deployment_as_the_controller_reports(kube, rendered(moved, "Deployment"), available=0)
    assert "0 of 1 pooler pod(s)" in made.rollout(kube, databases, at=NOW).message
    assert held(kube)

    # Rolled and available: the writers come back.
    deployment_as_the_controller_reports(kube, rendered(moved, "Deployment"), available=1)
    route = pooler_route(kube, NS, site=standby)
    assert (route.exists, route.ready) == (True, True)
    released = made.rollout(kube, databases, at=NOW)
    assert released.message.startswith(f"Deployment {WORKLOAD_NAME}:")
    assert not held(kube)


@pytest.mark.security
def test_a_tenant_admin_s_edits_of_the_credentials_secret_neither_release_nor_hold_the_writers(
    kube: FakeKube, databases: TenantDatabases, standby: SiteConfig
) -> None:
    made = scene(kube, databases)
    deployment_as_the_controller_reports(kube, rendered(made.first, "Deployment"), available=1)
    # The tenant-writable credentials Secret made to look moved (an edited password is not
    # used by the pooler part at all: it waits for the database part to heal it).
    edits = {"PGHOST": standby.host, "PGPORT": str(standby.port), "PGSSLMODE": "disable"}
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in edits.items()}
    kube.patch_merge(SECRET, "cleo-database", {"data": encoded}, namespace=NS)
    assert made.rollout(kube, databases, at=NOW).state == "Running"
    assert held(kube)
    # The pooler really moved and rolled: the writers come back, whatever that Secret says
    # (its password edited too).
    moved = made.pooler.reconcile(context("standby"))
    for obj in moved.objects:
        kube.apply(obj)
    deployment_as_the_controller_reports(kube, rendered(moved, "Deployment"), available=1)
    password = base64.b64encode(b"x" * 43).decode()
    kube.patch_merge(SECRET, "cleo-database", {"data": {"PGPASSWORD": password}}, namespace=NS)
    made.rollout(kube, databases, at=NOW)
    assert not held(kube)


def test_a_pooler_that_never_rolls_fails_the_step_after_the_rollout_timeout(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    made = scene(kube, databases)
    failed = made.rollout(kube, databases, at=NOW + datetime.timedelta(hours=1))
    assert (failed.state, failed.reason) == ("Failed", "PoolerNotRepointed")
    assert held(kube)


def test_the_pooler_s_server_is_read_from_its_rendered_configuration() -> None:
    ini = "[databases]\ncleo_acme = host=pg.example port=6543 dbname=cleo_acme user=cleo_acme\n"
    assert pooler_server(ini + "\n[pgbouncer]\nlisten_port = 6432\n") == ("pg.example", 6543)
    assert pooler_server("[pgbouncer]\nx = host=evil port=1 \n") is None
    assert pooler_server("") is None
