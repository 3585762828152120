"""The operator process with the chart's identity and the operator-scope admission policy:
a tenant with a database and a scheduled backup works with per-namespace rights only.

The session's operator runs as a cluster admin; here it is paused, and an operator process
runs instead with a token of the chart's ServiceAccount, with the chart's RBAC (the tenant
role bound by nobody but the operator itself) and its ValidatingAdmissionPolicy applied.
It must make the namespace, bind itself there, write the tenant's Secrets (the database
credentials), the workload, and the backup's runner ServiceAccount, Role, RoleBinding,
NetworkPolicy and CronJob, then delete the namespace under deletionPolicy Delete, all
without one Forbidden; and when that is done it holds nothing in kube-system.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.kube.permissions import OPERATOR_BINDING
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.specs import IMAGE, tenant_manifest
from tests.integration.test_helm_template import CHART

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.security]

RELEASE = "e2e-blast-cleo-operator"
IDENTITY = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"
TENANT_ROLE = f"{RELEASE}-tenant"
TENANT = "blast"
NAMESPACE = f"cleo-{TENANT}"
CHART_RBAC = (
    "templates/serviceaccount.yaml",
    "templates/rbac-cluster.yaml",
    "templates/rbac-operator-namespace.yaml",
    "templates/admission-operator-scope.yaml",
)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


@pytest.fixture
def chart_operator(
    cluster: LocalCluster,
    crds_installed: None,
    operator_sites: dict[str, str],
    without_session_operator: None,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, str]]:
    """The operator process as the chart's ServiceAccount in cleo-system; its token."""
    del crds_installed, without_session_operator
    only = [arg for path in CHART_RBAC for arg in ("--show-only", path)]
    rendered = subprocess.run(
        [
            str(cluster.bin_dir / "helm"),
            "template",
            RELEASE,
            str(CHART),
            "-n",
            OPERATOR_NAMESPACE,
            "--set",
            "rbac.createTenantRoles=false",
            *only,
        ],
        env={**cluster.env(), "HELM_CONFIG_HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    cluster.kubectl("apply", "--server-side", "-f", "-", input=rendered)
    token = cluster.kubectl(
        "create", "token", RELEASE, "-n", OPERATOR_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    kubeconfig = cluster.kubeconfig_for(IDENTITY, token)
    operator = start_operator(
        cluster,
        tmp_path / "operator.log",
        extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
        env={
            **operator_sites,
            "KUBECONFIG": str(kubeconfig),
            "CLEO_OPERATOR_TENANT_ROLE": TENANT_ROLE,
        },
    )
    try:
        yield operator, token
    finally:
        operator.stop()
        cluster.kubectl("delete", "cleotenant", TENANT, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=rendered, check=False)


def test_a_tenant_with_a_backup_works_with_per_namespace_rights_only(
    cluster: LocalCluster, chart_operator: tuple[OperatorProcess, str]
) -> None:
    operator, token = chart_operator
    # Before any tenant: not a single right on Secrets outside its own namespace.
    for args in (
        ("get", "secrets", "-n", "kube-system"),
        ("list", "secrets", "--all-namespaces"),
        ("create", "cronjobs.batch", "--all-namespaces"),
        ("create", "secrets", "-n", NAMESPACE),
    ):
        answer = cluster.kubectl("auth", "can-i", *args, f"--as={IDENTITY}", check=False)
        assert answer.stdout.strip() == "no", args

    tenant = tenant_manifest(
        TENANT,
        {
            "deletionPolicy": "Delete",
            "workload": {"image": IMAGE},
            "autoscaling": {"enabled": False},
            "database": {"enabled": True},
        },
    )
    backup = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": "nightly", "namespace": NAMESPACE},
        "spec": {
            "tenant": TENANT,
            "schedule": "0 3 * * *",
            "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}},
        },
    }
    audit_from = cluster.audit_offset()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))

    def ready() -> dict[str, Any] | None:
        obj = kubectl_json(cluster, "get", "cleotenant", TENANT)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        wait_for(ready, timeout=120, what=f"tenant {TENANT} Ready")
    finally:
        # What the operator met, should it not get there.
        print(kubectl_json(cluster, "get", "cleotenant", TENANT))  # noqa: T201
        print(operator.log_text()[-4000:])  # noqa: T201
    binding = kubectl_json(cluster, "get", "rolebinding", OPERATOR_BINDING, "-n", NAMESPACE)
    assert binding is not None
    assert binding["roleRef"]["name"] == TENANT_ROLE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": OPERATOR_NAMESPACE}
    ]
    assert kubectl_json(cluster, "get", "secret", "cleo-database", "-n", NAMESPACE) is not None

    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(backup))
    wait_for(
        lambda: kubectl_json(cluster, "get", "cronjob", "cleo-backup-nightly", "-n", NAMESPACE),
        timeout=60,
        what="the operator to make the backup's CronJob",
    )
    # Its rights stop at the tenant's namespace.
    for args in (("get", "secrets", "-n", "kube-system"), ("list", "secrets", "-A")):
        answer = cluster.kubectl("auth", "can-i", *args, f"--as={IDENTITY}", check=False)
        assert answer.stdout.strip() == "no", args

    # Delete the tenant: with backups, it gets a final one before its database is dropped
    # (made by the operator in the namespace, through its binding there). No runner pod
    # runs here, so deleting the tenant's CleoBackups then lets the drop go ahead, as
    # docs/backups.md says; the operator deletes the namespace (a tenant namespace: the
    # policy lets it).
    cluster.kubectl("delete", "cleotenant", TENANT, "--wait=false")
    final = wait_for(
        lambda: kubectl_json(cluster, "get", "cleobackup", "cleo-final-backup", "-n", NAMESPACE),
        timeout=60,
        what="the operator to make the final backup",
    )
    assert final["spec"]["tenant"] == TENANT
    cluster.kubectl("delete", "cleobackups", "--all", "-n", NAMESPACE, "--wait=true")
    wait_for(
        lambda: kubectl_json(cluster, "get", "cleotenant", TENANT) is None,
        timeout=120,
        what=f"tenant {TENANT} finalized",
    )
    namespace = kubectl_json(cluster, "get", "namespace", NAMESPACE)
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    assert operator.alive()
    # Every write it made before the namespace's deletion began was allowed (the audit
    # log of the API server). Once it began, the namespace controller empties it, the
    # operator's own binding included: a cleanup repeated there then meets a refusal,
    # which the finalizer tolerates (the credentials Secret goes with the namespace).
    events = cluster.audit_events(user=IDENTITY, offset=audit_from)
    namespace_deleted = next(
        i
        for i, e in enumerate(events)
        if e["verb"] == "delete"
        and e["objectRef"].get("resource") == "namespaces"
        and e["objectRef"].get("name") == NAMESPACE
    )
    refused = [
        f"{e['verb']} {e['objectRef'].get('resource')} {e['objectRef'].get('name')}: "
        f"{e['responseStatus'].get('code')}"
        for e in events[:namespace_deleted]
        # Its own tenant's namespace and the cluster-scoped writes: on the shared test
        # cluster other tests' tenants (bound to the session operator's identity, whose
        # RoleBinding roleRef this identity cannot change) are refused to it, rightly.
        if e["objectRef"].get("namespace") in (None, "", NAMESPACE, OPERATOR_NAMESPACE)
        and e["responseStatus"].get("code") in (401, 403, 422)
        # Kopf adding its finalizer to a CleoBackup this test deletes at the same moment
        # gets 422 (no new finalizers on an object being deleted): a race, not a refusal.
        and not (
            e["objectRef"].get("resource") == "cleobackups"
            and e["responseStatus"].get("code") == 422
        )
    ]
    assert not refused, refused
    assert any(
        e["verb"] == "delete"
        and e["objectRef"].get("resource") == "secrets"
        and e["objectRef"].get("name") == "cleo-database"
        and e["responseStatus"].get("code") == 200
        for e in events[:namespace_deleted]
    ), "the credentials Secret was not deleted before the namespace"
    log = operator.log_text()
    denied = [
        line
        for line in log.splitlines()
        if ("Forbidden" in line or " 403" in line)
        and "credentials Secret not deleted" not in line
        # Other tests' tenants and failovers on the shared cluster are not this identity's
        # to touch (their bindings name the session operator): refused, rightly.
        and (f"CleoTenant {TENANT}:" in line or f"{NAMESPACE}/" in line or f'"{NAMESPACE}"' in line)
    ]
    assert not denied, "the chart's identity was refused:\n" + "\n".join(denied[:20])
    assert token not in log


def test_a_backup_in_a_namespace_that_is_no_tenants_gets_nothing_written_there(
    cluster: LocalCluster, chart_operator: tuple[OperatorProcess, str]
) -> None:
    """Whoever may create CleoBackups in some namespace of the cluster (its own team's,
    kube-system) cannot make the operator write a runner, its Role, binding, NetworkPolicy
    or CronJob there: it holds no right outside tenant namespaces, and the policy fences
    the one RBAC write it holds cluster-wide."""
    operator, token = chart_operator
    foreign = "blast-foreign"
    cluster.kubectl("create", "namespace", foreign)
    try:
        audit_from = cluster.audit_offset()
        backup = {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": "stolen", "namespace": foreign},
            "spec": {
                "tenant": TENANT,
                "schedule": "*/5 * * * *",
                "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "x"}},
            },
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(backup))
        # The operator sees it (Kopf watches CleoBackups everywhere) and tries; give it
        # the time a backup needs to get its CronJob in a tenant namespace (seconds).
        wait_for(
            lambda: any(
                e["objectRef"].get("namespace") == foreign
                for e in cluster.audit_events(user=IDENTITY, offset=audit_from)
            ),
            timeout=60,
            what="the operator to try the foreign CleoBackup",
        )
        time.sleep(5)
        events = cluster.audit_events(user=IDENTITY, offset=audit_from)
        written = [
            f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}: "
            f"{e['responseStatus'].get('code')}"
            for e in events
            if e["objectRef"].get("namespace") == foreign
            and e["responseStatus"].get("code", 500) < 300
        ]
        assert not written, written
        for kind in (
            "cronjobs",
            "jobs",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "networkpolicies",
        ):
            items = kubectl_json(cluster, "get", kind, "-n", foreign)["items"]
            assert not [i for i in items if i["metadata"]["name"].startswith("cleo-")], kind
        assert operator.alive()
        assert token not in operator.log_text()
    finally:
        cluster.kubectl("delete", "namespace", foreign, "--wait=false", check=False)
