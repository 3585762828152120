"""The migrations part against what a red team found: a crash between a create and its
record, hostile annotations and logs, refused creates, a hand-edited Deployment, hot
polling, a pod released from its Job.

FakeKube fakes the API server only (tests/harness/fake_kube.py). Where an API server
failure must land at one precise request (a status write right after a create), the test
wraps the fake's methods and says so; the Job controller and the kubelet are played by
hand, as in tests/unit/reconcile/test_migrations_part.py.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import BACKUP, DEPLOYMENT, EVENT, JOB, POD, SECRET, TENANT, Kind
from cleo_operator.reconcile.migration_backups import one_off_name
from cleo_operator.reconcile.migrations import (
    RETRY_ANNOTATION,
    MigrationsPart,
    poll_seconds,
    read_status,
)
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext
from cleo_operator.render.migrations import migration_key
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import backup_manifest
from tests.unit.reconcile.test_migrations_part import (
    NEW,
    NEWER,
    NS,
    OLD,
    finish,
    image_of,
    jobs,
    migrated,
    set_spec,
    start,
    tenant_spec,
)
from tests.unit.reconcile.test_tenant_decisions import (
    NOW,
    conditions,
    run_deployment_controller,
    status_of,
)

pytestmark = pytest.mark.security  # each one is an attack the red team found, or its fix

PASSWORD = "s3cr3tPW"
DIGEST = "sha256:" + "ab" * 32


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kube(clock: Clock) -> FakeKube:
    return FakeKube(now=clock)


@pytest.fixture
def tenants(kube: FakeKube, clock: Clock) -> TenantReconciler:
    return TenantReconciler(
        kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system", now=clock
    )


def unrecorded_job(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A settled tenant moved to NEW whose round died right after its Job was made: the
    Job, which no status write after its create recorded."""
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    fail_status_writes_after_creating(monkeypatch, kube, JOB)
    with pytest.raises(KubeError):
        tenants.reconcile("acme")
    monkeypatch.undo()
    (job,) = jobs(kube)
    return job


def fail_status_writes_after_creating(
    monkeypatch: pytest.MonkeyPatch, kube: FakeKube, kind: Kind
) -> None:
    """The API server answers 503 to every status write of the tenant once an object of
    `kind` was created (as an operator that died right after its create never writes):
    a wrap of the fake's methods, since the failure must follow one precise request."""
    real_create, real_patch = kube.create, kube.patch_merge
    created: list[Any] = []

    def create(body: Any, *args: Any, **kwargs: Any) -> Any:
        made = real_create(body, *args, **kwargs)
        if body.get("kind") == kind.kind:
            created.append(made)
        return made

    def patch_merge(k: Kind, name: str, body: Any, *args: Any, **kwargs: Any) -> Any:
        if created and k == TENANT and kwargs.get("subresource") == "status":
            raise KubeError(status=503, reason="ServiceUnavailable", message="etcd", what="status")
        return real_patch(k, name, body, *args, **kwargs)

    monkeypatch.setattr(kube, "create", create)
    monkeypatch.setattr(kube, "patch_merge", patch_merge)


def attempt_of(kube: FakeKube) -> dict[str, Any]:
    return dict(status_of(kube, "acme")["migrations"].get("attempt") or {})


def add_schedule(kube: FakeKube, name: str) -> None:
    destination = {"type": "pvc", "pvc": {"claimName": "backups"}}
    spec = {"tenant": "acme", "schedule": "0 3 * * *", "destination": destination}
    kube.create(backup_manifest(name, NS, spec))


def settled(kube: FakeKube, tenants: TenantReconciler) -> None:
    """A tenant whose first migration succeeded and whose finished Job is gone."""
    migrated(kube, tenants, tenant_spec())
    tenants.reconcile("acme")


def migrating(kube: FakeKube, tenants: TenantReconciler, image: str = NEW) -> dict[str, Any]:
    """A settled tenant moved to `image`: the Job of its migration, running."""
    settled(kube, tenants)
    set_spec(kube, tenant_spec(image))
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    return job


def one_offs(kube: FakeKube) -> list[dict[str, Any]]:
    return [b for b in kube.objects(BACKUP, namespace=NS) if b["spec"].get("from")]


# -- finding 1: a create and its record ----------------------------------------------------


def test_a_job_created_but_not_recorded_is_adopted_not_killed(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unrecorded_job(kube, tenants, monkeypatch)
    kube.writes.clear()
    tenants.reconcile("acme")
    assert not [w for w in kube.writes if w.kind == "Job" and w.method == "delete"]
    (still,) = jobs(kube)
    assert still["metadata"]["uid"] == job["metadata"]["uid"]
    attempt = attempt_of(kube)
    assert (attempt["phase"], attempt["jobUid"]) == ("Running", job["metadata"]["uid"])
    finish(kube, still, ok=True, message="revision=2")
    tenants.reconcile("acme")
    assert image_of(kube) == NEW


def test_a_job_at_the_recorded_name_made_by_someone_else_is_not_adopted(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unrecorded_job(kube, tenants, monkeypatch)
    # Someone deletes it and plants a copy without the operator's owner reference.
    kube.delete(JOB, job["metadata"]["name"], namespace=NS)
    planted = {k: v for k, v in job.items() if k != "status"}
    planted["metadata"] = {
        k: v for k, v in job["metadata"].items() if k in ("name", "namespace", "labels")
    }
    planted["metadata"]["annotations"] = dict(job["metadata"]["annotations"])
    planted = kube.create(planted)
    tenants.reconcile("acme")
    assert kube.get(JOB, job["metadata"]["name"], namespace=NS) is None
    assert attempt_of(kube).get("jobUid") != planted["metadata"]["uid"]


def test_a_failed_status_write_after_one_offs_takes_no_second_set(
    kube: FakeKube,
    tenants: TenantReconciler,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    fail_status_writes_after_creating(monkeypatch, kube, BACKUP)
    with pytest.raises(KubeError):
        tenants.reconcile("acme")
    monkeypatch.undo()
    (first,) = one_offs(kube)
    clock.advance(7)  # a later second: a new name, were the name not recorded first
    tenants.reconcile("acme")
    assert [b["metadata"]["uid"] for b in one_offs(kube)] == [first["metadata"]["uid"]]
    attempt = attempt_of(kube)
    assert attempt["phase"] == "BackingUp"
    assert attempt["backups"] == [f"{first['metadata']['name']}/{first['metadata']['uid']}"]


def test_a_succeeded_job_is_kept_until_its_success_is_recorded(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = migrating(kube, tenants)
    finish(kube, job, ok=True, message="revision=2")
    set_spec(kube, tenant_spec(NEWER))
    kube.refuse("patch", TENANT, "acme", status=503, reason="Unavailable", subresource="status")
    with pytest.raises(KubeError):
        tenants.reconcile("acme")
    kube._refusals.clear()
    tenants.reconcile("acme")
    migrations = status_of(kube, "acme")["migrations"]
    assert migrations["image"] == NEW
    assert migrations["revision"] == "2"


# -- finding 2: the retry annotation -------------------------------------------------------


def test_an_overlong_retry_annotation_runs_nothing_and_says_so(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    settled(kube, tenants)
    kube.patch_merge(TENANT, "acme", {"metadata": {"annotations": {RETRY_ANNOTATION: "x" * 300}}})
    tenants.reconcile("acme")
    tenants.reconcile("acme")
    assert jobs(kube) == []
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert cond["reason"] == "InvalidRetryRequest"
    assert RETRY_ANNOTATION in cond["message"]
    migrations = status_of(kube, "acme")["migrations"]
    assert migrations["revision"] == "base"
    assert "retryRequest" not in migrations
    # A control character is refused as well; a good value runs.
    kube.patch_merge(TENANT, "acme", {"metadata": {"annotations": {RETRY_ANNOTATION: "a\nb"}}})
    tenants.reconcile("acme")
    assert jobs(kube) == []
    kube.patch_merge(TENANT, "acme", {"metadata": {"annotations": {RETRY_ANNOTATION: "2"}}})
    tenants.reconcile("acme")
    assert len(jobs(kube)) == 1


def test_an_unreadable_field_of_status_loses_only_that_field() -> None:
    state = read_status(
        {"key": "k" * 64, "image": OLD, "revision": "base", "retryRequest": "x" * 300}
    )
    assert (state.key, state.image, state.revision, state.retry_request) == (
        "k" * 64,
        OLD,
        "base",
        None,
    )


def test_more_sources_than_status_can_hold_take_no_backup(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    settled(kube, tenants)
    for i in range(17):
        add_schedule(kube, f"nightly-{i}")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    assert one_offs(kube) == []
    assert jobs(kube) == []
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert cond["reason"] == "TooManyBackupSources"
    assert image_of(kube) == OLD


# -- finding 3: the password in the last lines ---------------------------------------------


def test_the_last_lines_never_hold_the_tenants_password(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    settled(kube, tenants)
    kube.patch_merge(
        SECRET,
        "cleo-database",
        {
            "data": {
                "PGPASSWORD": base64.b64encode(PASSWORD.encode()).decode(),
                "DATABASE_URL": base64.b64encode(
                    f"postgresql://acme:{PASSWORD}@db.example:5432/acme".encode()
                ).decode(),
            }
        },
        namespace=NS,
    )
    set_spec(kube, tenant_spec(NEW))
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    log = "\n".join(
        [
            f"er:{PASSWORD}@db.example:5432/acme",  # a URL cut by the kubelet's tail
            f"connecting to //acme:{PASSWORD}@db",
            f"ParseResult(netloc='acme:{PASSWORD}@db:5432')",
            f"PGPASS={PASSWORD}",
            f'{{"{PASSWORD}": "{PASSWORD}"}}',
            "sqlalchemy.exc.OperationalError: relation missing",
        ]
    )
    finish(kube, job, ok=False, message=log)
    tenants.reconcile("acme")
    tenants.reconcile("acme")
    tenant = kube.get(TENANT, "acme")
    assert PASSWORD not in json.dumps(tenant)
    assert "relation missing" in conditions(kube, "acme")["MigrationsSucceeded"]["message"]
    events = kube.objects(EVENT, namespace="default")
    failed = [e for e in events if e["reason"] == "MigrationFailed"]
    assert failed
    assert PASSWORD not in json.dumps(events)
    # The last lines stay on status (the tenant's), not in the widely readable Events.
    assert all("relation missing" not in e["message"] for e in failed)


# -- finding 6: a re-pushed tag ------------------------------------------------------------


def test_the_deployment_runs_the_digest_the_migration_ran(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = migrating(kube, tenants)
    finish(kube, job, ok=True, message="revision=2")
    pod_name = f"{job['metadata']['name']}-{job['metadata']['uid'][:5]}"
    pod = kube.get(POD, pod_name, namespace=NS)
    assert pod is not None
    statuses = pod["status"]["containerStatuses"]
    statuses[0]["imageID"] = f"registry.example.com/cleoai@{DIGEST}"
    kube.patch_merge(
        POD,
        pod_name,
        {"status": {"containerStatuses": statuses}},
        namespace=NS,
        subresource="status",
    )
    tenants.reconcile("acme")
    assert image_of(kube) == f"registry.example.com/cleoai@{DIGEST}"
    migrations = status_of(kube, "acme")["migrations"]
    assert migrations["image"] == f"registry.example.com/cleoai@{DIGEST}"
    assert conditions(kube, "acme")["MigrationsSucceeded"]["reason"] == "Migrated"


# -- finding 7: refused creates ------------------------------------------------------------


def test_a_full_backup_quota_is_a_condition_not_a_failed_reconcile(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "hourly")
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    workload = parse_tenant_spec(tenant_spec(NEW, backupFirst=True)).workload
    assert workload is not None
    # The attempt's nonce names its one-offs: a known one, so that the test can refuse
    # the second one-off by name (the quota fills up after the first).
    nonce = "c0ffee" * 5 + "00"
    monkeypatch.setattr("cleo_operator.reconcile.migrations.new_nonce", lambda: nonce)
    second = one_off_name(migration_key(workload), 1, nonce=nonce)
    kube.refuse(
        "create",
        BACKUP,
        second,
        status=403,
        reason="Forbidden",
        message="exceeded quota: count/cleobackups.cleoai.io",
    )
    tenants.reconcile("acme")  # no exception
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert cond["reason"] == "BackupRefused"
    assert "exceeded quota" in cond["message"]
    (first,) = one_offs(kube)
    assert attempt_of(kube)["backups"] == [
        f"{first['metadata']['name']}/{first['metadata']['uid']}"
    ]
    tenants.reconcile("acme")
    assert jobs(kube) == []
    assert image_of(kube) == OLD


def test_a_refused_job_is_a_condition_not_a_failed_reconcile(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    kube.refuse("create", JOB, status=422, reason="Invalid", message="a webhook said no")
    tenants.reconcile("acme")
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert cond["reason"] == "JobRefused"
    assert "a webhook said no" in cond["message"]
    assert image_of(kube) == OLD


# -- finding 8: the live image before the first migration ----------------------------------


def test_a_hand_edited_image_is_repaired_before_the_first_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    spec = tenant_spec()
    del spec["workload"]["migrations"]
    start(kube, tenants, spec)
    tenants.reconcile("acme")
    run_deployment_controller(kube, NS)
    tenants.reconcile("acme")
    set_spec(kube, tenant_spec(NEW))  # migrations on, the first one runs
    tenants.reconcile("acme")
    assert len(jobs(kube)) == 1
    dep = kube.get(DEPLOYMENT, "cleoai", namespace=NS)
    assert dep is not None
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "evil.example/x:1"
    kube.patch_merge(DEPLOYMENT, "cleoai", {"spec": dep["spec"]}, namespace=NS)
    tenants.reconcile("acme")
    assert image_of(kube) == OLD


# -- finding 9: polling --------------------------------------------------------------------


def test_a_long_migration_is_polled_with_backoff() -> None:
    started = NOW
    waits = []
    now = started
    while now < started + datetime.timedelta(hours=1):
        wait = poll_seconds(started, now)
        waits.append(wait)
        now += datetime.timedelta(seconds=wait)
    assert waits[0] == 2.0
    assert waits[-1] == 30.0
    assert len(waits) < 160  # 1800 rounds at a fixed 2 s


def test_a_running_migration_asks_to_be_looked_at_later_as_it_ages(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    assert tenants.reconcile("acme").requeue_after == 2.0
    clock.advance(3600)
    assert tenants.reconcile("acme").requeue_after == 30.0


# -- finding 10: a pod released from its Job -----------------------------------------------


def test_a_pod_released_from_its_job_holds_the_next_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = migrating(kube, tenants)
    # A tenant admin took the labels off the running pod: the Job controller released it
    # (no owner reference, no labels), and it still runs.
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{job['metadata']['name']}-zzzzz", "namespace": NS},
            "spec": {"containers": [{"name": "migrate", "image": NEW}]},
        }
    )
    finish(kube, job, ok=False, message="boom")
    tenants.reconcile("acme")
    set_spec(kube, tenant_spec(NEWER))
    tenants.reconcile("acme")
    tenants.reconcile("acme")
    assert all(j["metadata"]["uid"] == job["metadata"]["uid"] for j in jobs(kube))
    assert not [j for j in jobs(kube) if NEWER in json.dumps(j)]


class LaterPart:
    """Stands in for the parts after the migrations (the automatic failover needs a
    PostgreSQL pool): records that it ran."""

    def __init__(self) -> None:
        self.rounds = 0

    def reconcile(self, ctx: TenantContext) -> PartResult:
        del ctx
        self.rounds += 1
        return PartResult()

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        del ctx, delete
        return True


def test_automatic_failover_runs_when_migrations_cannot_start(kube: FakeKube, clock: Clock) -> None:
    later = LaterPart()
    tenants = TenantReconciler(
        kube, parts=[MigrationsPart(kube), later], operator_namespace="cleo-system", now=clock
    )
    migrated(kube, tenants, tenant_spec())
    set_spec(kube, tenant_spec(NEW))
    kube.refuse("create", JOB, status=403, reason="Forbidden", message="exceeded quota: count/jobs")
    before = later.rounds
    tenants.reconcile("acme")
    assert later.rounds == before + 1
    assert conditions(kube, "acme")["MigrationsSucceeded"]["reason"] == "JobRefused"
