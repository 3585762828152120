"""A tenant admin asks for a backup now: on the real API server, with the shipped
tenant-protection policy, the tenant roles and the operator's quota, and the reconciler
running as the operator.

The attacker is a `spec.admins` user (its own ServiceAccount token, bound to
`cleo-tenant-admin` by the operator's RoleBinding). It may create CleoBackups, but the policy
admits only ``{tenant, from}`` one-offs for the namespace's own tenant, lets it change none,
and delete only such one-offs. What the policy cannot see (which CleoBackup ``from`` names)
the reconciler checks: a source of another tenant, or one that is not in the namespace,
gets a Ready=False condition and no runner. The namespace's quota stops the one-off past
its cap. A platform admin (whom RBAC lets update CleoBackups) still writes any CleoBackup.

What one-offs must not harm: the shared PostgreSQL (one-offs of a source run one at a time,
never beside the source's own run under Forbid), and the quota the platform's CleoBackups
and the final backup need (the operator cuts a source's one-offs back, and the final backup
makes room for itself).

The policy is installed for this module only (tenant_writable_support.install_policy).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import (
    BACKUP,
    EVENT,
    JOB,
    NAMESPACE,
    RESOURCE_QUOTA,
    ROLE,
    TENANT,
)
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.reconcile.backup_source import MAX_UNFINISHED_ONE_OFFS
from cleo_operator.reconcile.final_backup import FINAL_BACKUP_NAME, FinalBackup
from cleo_operator.reconcile.tenant_protection import TenantProtection
from cleo_operator.render.backup import BackupPodSettings
from cleo_operator.render.limits import BACKUPS_QUOTA_KEY, render_resource_quota
from cleo_operator.render.meta import tenant_owner
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.specs import backup_manifest, tenant_manifest
from tests.integration.backup_cluster_support import API_SERVER, RUNNER_IMAGE, write_keyring
from tests.security.tenant_writable_support import (
    ATTACKER,
    MESSAGE,
    attacker_client,
    bind_tenant_admin,
    create_tenant_namespace,
    new_name,
    operator_client,
    refused,
    tenant_protection,
)

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("without_session_operator"),
]

CAP = 6
"""spec.quota.backups of the tenant: CleoBackups its namespace may hold."""
DESTINATION = {"type": "pvc", "pvc": {"claimName": "backups", "path": "platform"}}
PLATFORM_LABEL = "cleoai.io/requested-by"
"""A platform's one-off: the policy refuses the label to tenants, and their deletes of it."""


@dataclass
class Scene:
    """Tenant A (the attacker's) and tenant B, each with the platform's CleoBackup."""

    tenant: str
    namespace: str
    other_tenant: str
    other_namespace: str
    admin: KubeClient
    operator: KubeClient
    attacker: KubeClient
    reconciler: BackupReconciler

    def ask(self, name: str, spec: dict[str, Any] | None = None) -> KubeObject:
        """The attacker creates CleoBackup `name` (default: a one-off of nightly)."""
        body = spec if spec is not None else {"tenant": self.tenant, "from": "nightly"}
        return self.attacker.create(backup_manifest(name, self.namespace, body))

    def ready(self, name: str) -> dict[str, Any]:
        backup = self.admin.get(BACKUP, name, namespace=self.namespace)
        assert backup is not None
        found: dict[str, Any] = next(
            c for c in backup["status"]["conditions"] if c["type"] == "Ready"
        )
        return found

    def runner_objects(self, name: str) -> list[str]:
        return [
            kind.kind
            for kind in (ROLE, JOB)
            for prefix in ("cleo-backup-", "cleo-run-")
            if self.admin.get(kind, f"{prefix}{name}", namespace=self.namespace) is not None
        ]

    def source_ready(self) -> None:
        """nightly's own objects (the ServiceAccount a one-off's runner runs as)."""
        self.reconciler.reconcile(self.namespace, "nightly")

    def backups(self) -> list[str]:
        return [b["metadata"]["name"] for b in self.admin.list(BACKUP, namespace=self.namespace)]


def quota_counts(kube: KubeClient, namespace: str) -> int | None:
    """How many CleoBackups the namespace's quota counts; None before it counted them."""
    quota = kube.get(RESOURCE_QUOTA, "cleo-quota", namespace=namespace) or {}
    used = (quota.get("status") or {}).get("used") or {}
    return int(used[BACKUPS_QUOTA_KEY]) if BACKUPS_QUOTA_KEY in used else None


def _tenant(admin: KubeClient, operator: KubeClient, tenant: str, namespace: str) -> None:
    """A paused CleoTenant and its labelled namespace, with what a backup runner needs."""
    spec = {
        "paused": True,
        "namespace": namespace,
        "database": {"enabled": True, "site": "main"},
        "quota": {"backups": CAP},
    }
    created = admin.create(tenant_manifest(tenant, spec))
    create_tenant_namespace(admin, namespace, tenant)
    # What the operator writes there (names the policy reserves for it).
    quota = render_resource_quota(
        tenant=tenant,
        namespace=namespace,
        owner=tenant_owner(name=tenant, uid=created["metadata"]["uid"]),
        spec=parse_tenant_spec(spec),
    )
    assert quota is not None
    operator.apply(quota)
    write_keyring(operator, namespace)
    login = {
        "PGHOST": "db.example",
        "PGPORT": "5432",
        "PGDATABASE": "d",
        "PGUSER": "u",
        "PGSSLMODE": "disable",
    }
    operator.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-database", "namespace": namespace},
            "data": {
                k: base64.b64encode(v.encode()).decode()
                for k, v in {**login, "PGPASSWORD": secrets.token_hex(16)}.items()
            },
        }
    )
    admin.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "backups", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    # The quota admits nothing of what it caps until its controller has counted it. A quota
    # made within the half minute after the CRD appeared is counted only at the controller's
    # full resync (minutes): a change of spec.hard makes it count again, as an operator
    # upgrade does. (Clusters whose CRDs are older than their tenants never see this.)
    flip = iter(range(10**6))

    def counted() -> bool:
        if quota_counts(admin, namespace) is not None:
            return True
        hard = quota["spec"]["hard"]
        hard[BACKUPS_QUOTA_KEY] = str(CAP + next(flip) % 2)
        operator.apply(quota)
        return False

    wait_for(counted, timeout=90, interval=2.0, what="the quota controller to count CleoBackups")
    quota["spec"]["hard"][BACKUPS_QUOTA_KEY] = str(CAP)
    operator.apply(quota)
    # The platform's scheduled backup: what tenant admins may ask to run now.
    admin.create(
        backup_manifest(
            "nightly",
            namespace,
            {"tenant": tenant, "schedule": "@daily", "destination": DESTINATION},
        )
    )


@pytest.fixture(scope="module")
def scene(cluster: LocalCluster, kube: KubeClient, crds_installed: None) -> Iterator[Scene]:
    del crds_installed
    operator = operator_client(cluster)
    tenant, other = new_name("oob"), new_name("oob")
    namespace, other_namespace = f"cleo-{tenant}", f"cleo-{other}"
    reconciler = BackupReconciler(
        operator,
        settings=BackupSettings(
            pod=BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER)
        ),
    )
    with tenant_protection(cluster, kube):
        try:
            _tenant(kube, operator, tenant, namespace)
            _tenant(kube, operator, other, other_namespace)
            # As the operator binds spec.admins while it sees the policy in place.
            assert TenantProtection(kube).in_place()
            bind_tenant_admin(
                operator, tenant=tenant, namespace=namespace, user=ATTACKER, backup_requests=True
            )
            # Where it did not see it: cleo-tenant-admin alone.
            bind_tenant_admin(operator, tenant=other, namespace=other_namespace, user=ATTACKER)
            yield Scene(
                tenant=tenant,
                namespace=namespace,
                other_tenant=other,
                other_namespace=other_namespace,
                admin=kube,
                operator=operator,
                attacker=attacker_client(cluster, kube),
                reconciler=reconciler,
            )
        finally:
            reconciler.close()
            for name, ns in ((tenant, namespace), (other, other_namespace)):
                kube.delete(TENANT, name)
                kube.delete(NAMESPACE, ns)


# -- what the policy refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"destination": DESTINATION},
        {"destination": {"type": "pvc", "pvc": {"claimName": "attacker-claim"}}},
        {"schedule": "* * * * *", "destination": DESTINATION},
        {"from": "nightly", "resources": {"limits": {"cpu": "64", "memory": "256Gi"}}},
    ],
    ids=["destination", "own-claim", "schedule", "resources"],
)
def test_a_tenant_admin_cannot_create_a_backup_that_aims_the_runner(
    scene: Scene, spec: dict[str, Any]
) -> None:
    error = refused(scene.ask, "mine", {"tenant": scene.tenant, **spec})
    assert error.status == 403, error.message
    assert MESSAGE in error.message
    assert "may only ask for a one-off run" in error.message
    assert "mine" not in scene.backups()


def test_a_tenant_admin_cannot_ask_in_another_tenants_name(scene: Scene) -> None:
    error = refused(scene.ask, "theirs", {"tenant": scene.other_tenant, "from": "nightly"})
    assert MESSAGE in error.message
    assert f"{{tenant: {scene.tenant}, from: <its name>}}" in error.message


def test_a_one_off_cannot_be_planted_with_a_finalizer(scene: Scene) -> None:
    # It could never be removed, and would hold a slot of the quota for good.
    body = backup_manifest("stuck", scene.namespace, {"tenant": scene.tenant, "from": "nightly"})
    body["metadata"]["finalizers"] = ["example.com/never"]
    error = refused(scene.attacker.create, body)
    assert MESSAGE in error.message


def test_a_tenant_admin_can_neither_change_nor_delete_the_platforms_backup(
    scene: Scene,
) -> None:
    patch = {"spec": {"destination": {"type": "pvc", "pvc": {"claimName": "attacker-claim"}}}}
    changed = refused(
        scene.attacker.patch_merge, BACKUP, "nightly", patch, namespace=scene.namespace
    )
    assert changed.status == 403  # RBAC: no update, no patch
    deleted = refused(scene.attacker.delete, BACKUP, "nightly", namespace=scene.namespace)
    assert deleted.status == 403
    assert MESSAGE in deleted.message  # RBAC allows delete; the policy refuses this one
    nightly = scene.admin.get(BACKUP, "nightly", namespace=scene.namespace)
    assert nightly is not None
    assert nightly["spec"]["destination"] == DESTINATION


# -- what the operator refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        # tenant B's backup exists only in tenant B's namespace: a name cannot reach it.
        ("nightly-b", "SourceNotFound"),
        # a platform CleoBackup of tenant B that was put in tenant A's namespace.
        ("misplaced", "SourceMismatch"),
    ],
    ids=["other-namespace", "other-tenant"],
)
def test_a_one_off_naming_what_is_not_its_tenants_gets_no_runner(
    scene: Scene, case: tuple[str, str]
) -> None:
    source, reason = case
    if source == "nightly-b":
        namespace = scene.other_namespace
        spec = {"tenant": scene.other_tenant, "schedule": "@daily", "destination": DESTINATION}
    else:
        namespace = scene.namespace
        spec = {"tenant": scene.other_tenant, "destination": DESTINATION}
    scene.admin.create(backup_manifest(source, namespace, spec))
    name = f"ask-{source}"
    try:
        scene.ask(name, {"tenant": scene.tenant, "from": source})
        result = scene.reconciler.reconcile(scene.namespace, name)
        ready = scene.ready(name)
        assert (ready["status"], ready["reason"]) == ("False", reason)
        assert (result.applied, scene.runner_objects(name)) == ([], [])
        # The misplaced one gets no runner either (it names another tenant).
        if source == "misplaced":
            scene.reconciler.reconcile(scene.namespace, "misplaced")
            assert scene.runner_objects("misplaced") == []
    finally:
        scene.attacker.delete(BACKUP, name, namespace=scene.namespace)
        scene.admin.delete(BACKUP, source, namespace=namespace)


# -- what a tenant admin may do ------------------------------------------------------------


def test_a_tenant_admin_asks_for_a_backup_now_and_cleans_it_up(scene: Scene) -> None:
    scene.source_ready()
    scene.ask("now-1")
    result = scene.reconciler.reconcile(scene.namespace, "now-1")
    assert [ref["kind"] for ref in result.applied][-1] == "Job", scene.ready("now-1")
    job = scene.admin.get(JOB, "cleo-run-now-1", namespace=scene.namespace)
    assert job is not None
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][6].endswith("/platform")  # the source's folder
    # It runs as the source's identity, and ends within its deadline whatever the tenant does.
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "cleo-backup-nightly"
    assert job["spec"]["activeDeadlineSeconds"] > 0
    # Its runner's identity, as the operator made it, is not the attacker's to touch.
    error = refused(scene.attacker.delete, ROLE, "cleo-run-now-1", namespace=scene.namespace)
    assert error.status == 403
    scene.attacker.delete(BACKUP, "now-1", namespace=scene.namespace)
    assert "now-1" not in scene.backups()


def test_a_platform_admin_still_writes_any_backup(scene: Scene) -> None:
    # A cluster admin is not trusted by the policy, but RBAC lets it update CleoBackups.
    scene.admin.create(
        backup_manifest(
            "weekly",
            scene.namespace,
            {"tenant": scene.tenant, "schedule": "@weekly", "destination": DESTINATION},
        )
    )
    scene.admin.patch_merge(
        BACKUP, "weekly", {"spec": {"suspend": True}}, namespace=scene.namespace
    )
    scene.admin.delete(BACKUP, "weekly", namespace=scene.namespace)


def test_the_quota_stops_the_one_off_past_the_cap(scene: Scene) -> None:
    _wait_for_quota(scene)
    room = CAP - len(scene.backups())
    assert room > 0
    asked = [f"spam-{i}" for i in range(room)]
    try:
        for name in asked:
            scene.ask(name)
        error = refused(scene.ask, "spam-over")
        assert error.status == 403
        assert "exceeded quota" in error.message
        assert BACKUPS_QUOTA_KEY in error.message
    finally:
        _cleanup(scene.attacker, scene.namespace, asked)


# -- what one-offs must not harm -----------------------------------------------------------


def _cleanup(kube: KubeClient, namespace: str, names: list[str]) -> None:
    """Delete the CleoBackups `names` (those already gone are passed over)."""
    for name in names:
        kube.delete(BACKUP, name, namespace=namespace)


def _reason(scene: Scene, name: str) -> str:
    return str(scene.ready(name)["reason"])


def _wait_for_quota(scene: Scene) -> None:
    wait_for(
        lambda: quota_counts(scene.admin, scene.namespace) == len(scene.backups()),
        timeout=60,
        interval=0.5,
        what="the quota's usage",
    )


def test_one_offs_of_a_source_run_one_at_a_time_oldest_first(scene: Scene) -> None:
    asked = ["line-1", "line-2", "line-3"]
    try:
        for name in asked:
            scene.ask(name)
        # The newest is reconciled first: it cannot jump the line.
        for name in reversed(asked):
            scene.reconciler.reconcile(scene.namespace, name)
        assert scene.runner_objects("line-1") == ["Role", "Job"]
        for name in asked[1:]:
            assert scene.runner_objects(name) == []
            backup = scene.admin.get(BACKUP, name, namespace=scene.namespace)
            assert backup is not None
            assert backup["status"]["phase"] == "Pending"
        assert _reason(scene, "line-2") == "WaitingInLine"
        scene.reconciler.reconcile(scene.namespace, "line-2")
        assert _reason(scene, "line-2") == "WaitingForOneOff"
        assert "line-1" in scene.ready("line-2")["message"]
        # The running one goes (the attacker may delete its own): the next one starts.
        scene.attacker.delete(BACKUP, "line-1", namespace=scene.namespace)
        scene.reconciler.reconcile(scene.namespace, "line-3")
        scene.reconciler.reconcile(scene.namespace, "line-2")
        assert scene.runner_objects("line-2") == ["Role", "Job"]
        assert scene.runner_objects("line-3") == []
    finally:
        _cleanup(scene.admin, scene.namespace, asked)


def test_a_one_off_waits_while_its_source_runs_under_forbid(scene: Scene) -> None:
    # The source's own run, as its CronJob would start it (no kubelet here: it stays active).
    running = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "nightly-by-hand",
            "namespace": scene.namespace,
            "labels": {"cleoai.io/backup": "nightly"},
        },
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": RUNNER_IMAGE}],
                }
            }
        },
    }
    scene.operator.create(running)  # the policy reserves the runner's labels to the operator
    try:
        scene.ask("beside")
        scene.reconciler.reconcile(scene.namespace, "beside")
        assert _reason(scene, "beside") == "WaitingForSource"
        assert scene.runner_objects("beside") == []
        scene.operator.delete(JOB, "nightly-by-hand", namespace=scene.namespace)
        wait_for(
            lambda: scene.admin.get(JOB, "nightly-by-hand", namespace=scene.namespace) is None,
            timeout=30,
            interval=0.2,
            what="the source's Job to go",
        )
        scene.reconciler.reconcile(scene.namespace, "beside")
        assert scene.runner_objects("beside") == ["Role", "Job"]
    finally:
        _cleanup(scene.admin, scene.namespace, ["beside"])
        if scene.admin.get(JOB, "nightly-by-hand", namespace=scene.namespace) is not None:
            scene.operator.delete(JOB, "nightly-by-hand", namespace=scene.namespace)


def test_a_tenant_filling_the_quota_cannot_keep_the_platform_out(scene: Scene) -> None:
    _wait_for_quota(scene)
    asked = [f"fill-{i}" for i in range(CAP - len(scene.backups()))]
    assert len(asked) > MAX_UNFINISHED_ONE_OFFS
    weekly = backup_manifest(
        "weekly",
        scene.namespace,
        {"tenant": scene.tenant, "schedule": "@weekly", "destination": DESTINATION},
    )
    try:
        for name in asked:
            scene.ask(name)
        error = refused(scene.admin.create, weekly)
        assert "exceeded quota" in error.message  # the attack works on the quota alone
        scene.reconciler.reconcile(scene.namespace, asked[0])
        left = [name for name in scene.backups() if name.startswith("fill-")]
        assert left == asked[:MAX_UNFINISHED_ONE_OFFS]
        events = [
            e
            for e in scene.admin.list(EVENT, namespace=scene.namespace)
            if e.get("reason") == "OneOffRemoved"
        ]
        assert {e["involvedObject"]["name"] for e in events} >= set(asked[MAX_UNFINISHED_ONE_OFFS:])

        def platform_creates() -> bool:
            try:
                scene.admin.create(weekly)
            except KubeError as exc:
                if "exceeded quota" in exc.message:
                    return False
                raise
            return True

        wait_for(platform_creates, timeout=60, interval=0.5, what="room for the platform")
    finally:
        _cleanup(scene.admin, scene.namespace, [*asked, "weekly"])


# -- names, orphans and the platform's one-offs --------------------------------------------


def test_a_one_off_named_after_a_scheduled_run_does_not_suppress_it(scene: Scene) -> None:
    # The CronJob controller names nightly's runs cleo-backup-nightly-<unix minutes>: a
    # one-off that took such a name first would make the controller skip that run.
    minutes = int(time.time()) // 60 + 1
    error = refused(scene.ask, f"nightly-{minutes}")
    assert MESSAGE in error.message
    assert "6 or more digits" in error.message
    # Named so by a platform admin (the policy trusts it), its runner still takes no
    # name the CronJob controller gives.
    scene.source_ready()
    name = f"nightly-{minutes + 1}"
    scene.admin.create(
        backup_manifest(name, scene.namespace, {"tenant": scene.tenant, "from": "nightly"})
    )
    try:
        scene.reconciler.reconcile(scene.namespace, name)
        assert scene.admin.get(JOB, f"cleo-run-{name}", namespace=scene.namespace) is not None
        assert scene.admin.get(JOB, f"cleo-backup-{name}", namespace=scene.namespace) is None
    finally:
        scene.admin.delete(BACKUP, name, namespace=scene.namespace)


def test_a_tenant_admin_cannot_orphan_a_one_offs_runner(scene: Scene) -> None:
    scene.source_ready()
    scene.ask("orphaning")
    scene.reconciler.reconcile(scene.namespace, "orphaning")
    try:
        error = refused(
            scene.attacker.delete,
            BACKUP,
            "orphaning",
            namespace=scene.namespace,
            propagation="Orphan",
        )
        assert MESSAGE in error.message
        assert "propagationPolicy Orphan" in error.message
        assert "orphaning" in scene.backups()
    finally:
        scene.attacker.delete(BACKUP, "orphaning", namespace=scene.namespace)


def test_a_tenant_admin_can_neither_mark_nor_delete_the_platforms_one_offs(
    scene: Scene,
) -> None:
    body = backup_manifest("marked", scene.namespace, {"tenant": scene.tenant, "from": "nightly"})
    body["metadata"]["labels"] = {PLATFORM_LABEL: "platform"}
    error = refused(scene.attacker.create, body)
    assert MESSAGE in error.message
    scene.admin.create(body)
    try:
        deleted = refused(scene.attacker.delete, BACKUP, "marked", namespace=scene.namespace)
    finally:
        kept = "marked" in scene.backups()
        scene.admin.delete(BACKUP, "marked", namespace=scene.namespace)
    assert MESSAGE in deleted.message
    assert kept


def test_without_the_requester_binding_a_tenant_admin_cannot_create_a_backup(
    scene: Scene,
) -> None:
    # In tenant B's namespace the attacker is cleo-tenant-admin only (as the operator binds
    # it where the policy is not in place): RBAC itself refuses, policy or not.
    body = backup_manifest("asked", scene.other_namespace, {"tenant": scene.other_tenant})
    body["spec"]["from"] = "nightly"
    error = refused(scene.attacker.create, body)
    assert error.status == 403
    assert MESSAGE not in error.message  # RBAC's refusal, not the policy's
    assert scene.admin.get(BACKUP, "asked", namespace=scene.other_namespace) is None


HOLD = "example.com/hold-for-test"


def test_one_offs_filling_the_quota_cannot_hold_up_the_final_backup(scene: Scene) -> None:
    """Last of the module: it deletes the tenant (held by a finalizer of the test's own)."""
    _wait_for_quota(scene)
    asked = [f"last-{i}" for i in range(CAP - len(scene.backups()))]
    for name in asked:
        scene.ask(name)
    # Make them finished, as their runs would have (the runner writes the history).
    for name in asked:
        run = {"startTime": "2026-03-01T12:00:00Z", "endTime": "2026-03-01T12:01:00Z"}
        scene.admin.patch_merge(
            BACKUP,
            name,
            {"status": {"history": [{**run, "succeeded": True, "reason": "BackupSucceeded"}]}},
            namespace=scene.namespace,
            subresource="status",
        )
    assert FINAL_BACKUP_NAME not in scene.backups()
    scene.admin.patch_merge(TENANT, scene.tenant, {"metadata": {"finalizers": [HOLD]}})
    try:
        scene.admin.delete(TENANT, scene.tenant)
        live = scene.admin.get(TENANT, scene.tenant)
        assert live is not None
        spec = parse_tenant_spec({**live["spec"], "deletionPolicy": "Delete"})
        final = FinalBackup(scene.operator)
        answers: list[str | None] = []

        def made() -> bool:
            answers.append(final(scene.tenant, spec))
            return FINAL_BACKUP_NAME in scene.backups()

        # The quota's count lags the deletions: the hook is called again, as the tenant's
        # finalizer would call it, until the API server admits the final backup.
        wait_for(made, timeout=60, interval=0.5, what="the final backup")
        assert answers[-1] is not None
        assert "just created" in answers[-1]
        assert not [name for name in scene.backups() if name.startswith("last-")]
    finally:
        scene.admin.patch_merge(TENANT, scene.tenant, {"metadata": {"finalizers": None}})
