"""The migration Job and its NetworkPolicy: what runs, with what, and what it may reach."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.api.errors import SpecError
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.migrations import (
    migration_job_name,
    migration_key,
    pinned_image,
    render_migration_job,
    render_migration_policy,
)
from cleo_operator.render.network import render_network_policies
from cleo_operator.render.tenant import render_tenant
from tests.unit.render.netpol import Pod, can_connect, can_reach_ip
from tests.unit.render.pod_security import restricted_violations

TENANT = "acme"
UID = "0b1d7a4e-2f4c-4a57-9d55-3f1e2a9c0d11"
NS = "cleo-acme"
OWNER = tenant_owner(name=TENANT, uid=UID)
DATABASE_IP = "10.20.7.7"


def spec(**migrations: Any) -> CleoTenantSpec:
    workload: dict[str, Any] = {
        "image": "registry.example.com/cleoai:2.0.0",
        "config": {"CLEO_MODE": "prod"},
        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}},
        "migrations": {"command": ["alembic", "upgrade", "head"], **migrations},
    }
    return parse_tenant_spec(
        {
            "workload": workload,
            "database": {"enabled": True},
            "network": {"databaseEgress": [{"cidr": "10.20.0.0/16", "ports": [5432]}]},
        }
    )


def with_workload(base: CleoTenantSpec, **changes: Any) -> CleoTenantSpec:
    assert base.workload is not None
    return base.model_copy(update={"workload": base.workload.model_copy(update=changes)})


def job(tenant_spec: CleoTenantSpec) -> dict[str, Any]:
    return render_migration_job(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        spec=tenant_spec,
        database_secret="cleo-database",
        nonce="0" * 32,
    )


def test_the_key_follows_what_runs_and_nothing_else() -> None:
    base = spec()
    assert base.workload is not None
    key = migration_key(base.workload)
    new_image = with_workload(base, image="registry.example.com/cleoai:2.1.0")
    assert new_image.workload is not None
    assert migration_key(new_image.workload) != key
    other = spec(args=["--sql"])
    assert other.workload is not None
    assert migration_key(other.workload) != key
    command = spec(command=["alembic", "upgrade", "+1"])
    assert command.workload is not None
    assert migration_key(command.workload) != key
    # Configuration, replicas, the timeout: not what runs.
    same = with_workload(base, replicas=7, env=[], config={"X": "y"})
    assert same.workload is not None
    assert migration_key(same.workload) == key
    slower = spec(timeout="20m", backoffLimit=3)
    assert slower.workload is not None
    assert migration_key(slower.workload) == key


def test_the_job_runs_the_command_in_the_workloads_image_with_direct_credentials() -> None:
    tenant_spec = spec(args=["--verbose"], timeout="1h30m", backoffLimit=2)
    assert tenant_spec.workload is not None
    rendered = job(tenant_spec)
    assert rendered["metadata"]["name"] == migration_job_name(migration_key(tenant_spec.workload))
    assert rendered["metadata"]["name"].startswith("cleo-migrate-")
    assert rendered["metadata"]["ownerReferences"] == [OWNER]
    job_spec = rendered["spec"]
    assert job_spec["activeDeadlineSeconds"] == 5400
    assert job_spec["backoffLimit"] == 2
    pod = job_spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/cleoai:2.0.0"
    assert container["command"] == ["alembic", "upgrade", "head"]
    assert container["args"] == ["--verbose"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The database Secret last, so its (direct) DATABASE_URL wins; no sealed secrets.
    assert container["envFrom"] == [
        {"configMapRef": {"name": "cleoai-config"}},
        {"secretRef": {"name": "cleo-database"}},
    ]
    assert "env" not in container
    assert container["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}}
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "cleoai"
    assert pod["automountServiceAccountToken"] is False
    assert restricted_violations(pod) == []


def test_the_jobs_selector_holds_only_labels_tenants_cannot_put_on_pods() -> None:
    rendered = job(spec())
    selector = rendered["spec"]["selector"]
    assert rendered["spec"]["manualSelector"] is True
    assert selector["matchLabels"]["app.kubernetes.io/managed-by"] == "cleo-operator"
    assert selector["matchLabels"] == rendered["spec"]["template"]["metadata"]["labels"]
    assert selector["matchLabels"]["cleoai.io/migration"] in rendered["metadata"]["name"]


def test_timeouts_past_a_day_are_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.workload\.migrations\.timeout"):
        spec(timeout="25h")
    with pytest.raises(SpecError, match=r"spec\.workload\.migrations\.command"):
        spec(command=[])
    with pytest.raises(SpecError, match=r"spec\.workload\.migrations\.backoffLimit"):
        spec(backoffLimit=11)
    assert spec(timeout="1d").workload is not None


def test_migrations_need_a_database() -> None:
    with pytest.raises(SpecError, match=r"spec\.workload\.migrations.*database\.enabled"):
        parse_tenant_spec({"workload": {"image": "x:1", "migrations": {"command": ["m"]}}})


def _policies(tenant_spec: CleoTenantSpec) -> list[dict[str, Any]]:
    own = render_migration_policy(tenant=TENANT, namespace=NS, owner=OWNER, spec=tenant_spec)
    assert own is not None
    return [
        *render_network_policies(tenant=TENANT, namespace=NS, owner=OWNER, spec=tenant_spec),
        own,
    ]


def test_a_migration_pod_reaches_dns_and_its_database_and_nothing_else() -> None:
    tenant_spec = spec()
    policies = _policies(tenant_spec)
    labels = job(tenant_spec)["spec"]["template"]["metadata"]["labels"]
    migration = Pod(NS, labels, {"cleoai.io/tenant": TENANT})
    workload = Pod(NS, {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT})
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    assert can_reach_ip(policies, migration, DATABASE_IP, port=5432)
    assert can_connect(policies, migration, dns, port=53, protocol="UDP")
    assert not can_connect(policies, migration, workload, port=8080)
    assert not can_connect(policies, workload, migration, port=8080)
    assert not can_reach_ip(policies, migration, "192.0.2.10", port=443)
    # The tenant's other pods still talk to each other.
    assert can_connect(policies, workload, Pod(NS, {"app": "worker"}), port=9000)


def test_the_policy_and_job_come_and_go_with_the_spec() -> None:
    tenant_spec = spec()
    children = render_tenant(name=TENANT, uid=UID, spec=tenant_spec, config_checksum="x")
    assert "cleo-allow-migration" in [c["metadata"]["name"] for c in children]
    plain = with_workload(tenant_spec, migrations=None)
    children = render_tenant(name=TENANT, uid=UID, spec=plain, config_checksum="x")
    assert "cleo-allow-migration" not in [c["metadata"]["name"] for c in children]


def test_the_deployment_runs_the_image_it_is_given_or_none_when_held() -> None:
    tenant_spec = spec()
    kwargs: dict[str, Any] = {
        "name": TENANT,
        "uid": UID,
        "spec": tenant_spec,
        "config_checksum": "x",
    }
    pinned = render_tenant(**kwargs, workload_image="registry.example.com/cleoai:1.9.0")
    (deployment,) = [c for c in pinned if c["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/cleoai:1.9.0"
    held = render_tenant(**kwargs, hold_workload=True)
    assert [c for c in held if c["kind"] == "Deployment"] == []


@pytest.mark.security
def test_a_deleted_migration_pod_is_replaced_only_once_it_failed() -> None:
    # The default (TerminatingOrFailed) starts a replacement while the first pod still
    # terminates: two migrations at once against one schema.
    rendered = job(spec(backoffLimit=2))
    assert rendered["spec"]["podReplacementPolicy"] == "Failed"


def test_the_pinned_image_is_the_repository_at_the_reported_digest() -> None:
    digest = "sha256:" + "0f" * 32
    assert pinned_image("registry:5000/team/cleoai:2.0", f"registry:5000/team/cleoai@{digest}") == (
        f"registry:5000/team/cleoai@{digest}"
    )
    assert pinned_image("cleoai", f"docker-pullable://cleoai@{digest}") == f"cleoai@{digest}"
    # The runtime spells a Docker Hub name in full.
    assert pinned_image("cleoai:2", f"docker.io/library/cleoai@{digest}") == f"cleoai@{digest}"
    # No digest reported (or not a sha256 one): nothing to pin to.
    assert pinned_image("registry:5000/cleoai:2.0", "") is None
    assert pinned_image("cleoai:2", "cleoai@sha256:short") is None


@pytest.mark.security
def test_the_pin_never_changes_repository_nor_a_digest_written_in_the_spec() -> None:
    digest = "sha256:" + "0f" * 32
    # A digest of another repository (another container's, or a tenant's image that
    # shares a layer): no pin, rather than a repository nobody chose.
    assert pinned_image("registry:5000/team/cleoai:2.0", f"x@{digest}") is None
    assert pinned_image("r.example/c:1", f"evil.example/c@{digest}") is None
    assert pinned_image("cleoai:2", f"docker.io/library/other@{digest}") is None
    # A spec image given by digest is kept exactly as written.
    written = f"r.example/c:1@sha256:{'1' * 64}"
    assert pinned_image(written, f"r.example/c@{digest}") == written
