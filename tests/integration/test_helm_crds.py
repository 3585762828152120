"""The chart's CRDs and roles on a real API server, with the real `helm`, in the order a
platform team meets them.

1. `cleo-operator crds --stdout | kubectl apply --server-side -f -` installs CRDs the
   server serves with exactly the models' schemas (as a release whose chart still had a
   `crds/` folder, or a `kubectl apply`, left them: no Helm ownership).
2. `helm install` refuses CRDs it does not own; the adoption commands of docs/install.md
   (copied verbatim here, and checked to be there) hand them to the release.
3. `helm upgrade` to a chart whose CRD gained a field puts the field on the server (Helm
   never upgrades a chart's `crds/` folder; templates it does).
4. Tenant admins and viewers read the CleoBackups and CleoFailovers of their namespace, and
   may neither change them nor create or delete CleoFailovers (docs/security.md), as
   `kubectl auth can-i` and real requests under impersonation show. Tenant admins may
   create and delete CleoBackups (the admission policy narrows that to one-offs with
   spec.from: tests/security/test_tenant_one_off_backups.py).
5. The ClusterRoles aggregated to `view`/`edit`/`admin` (opt-in): a namespace `view`er reads
   them, an `edit`or may also ask for a backup, never write a failover; none gets CleoTenants.
6. `helm uninstall` with crds.keep leaves the CRDs and the custom resources.

Why a control plane of its own: CRDs are cluster-wide, and the session's shared cluster has
them from `crds_installed`, owned by no release; installing and uninstalling them here
would pull them from under every other module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.api.crdgen import generate_crds
from e2e.cluster import LocalCluster, build_toolchain
from tests.harness.cluster_fixtures import REPO, kubectl_json, wait_for
from tests.integration.test_helm_template import CHART
from tests.unit.test_api_backup import GOOD as GOOD_BACKUP
from tests.unit.test_api_failover import GOOD as GOOD_FAILOVER

pytestmark = [pytest.mark.cluster]

RELEASE = "crd-cleo-operator"
NAMESPACE = "cleo-crds"
TEAM = "team-crds"
CRDS = [crd["metadata"]["name"] for crd in generate_crds()]

# docs/install.md, "Upgrading from a chart that installed crds/", verbatim but for the
# release's name and namespace.
ADOPT = [
    "kubectl label crd -l app.kubernetes.io/part-of=cleo-operator "
    "app.kubernetes.io/managed-by=Helm --overwrite",
    "kubectl annotate crd -l app.kubernetes.io/part-of=cleo-operator "
    "meta.helm.sh/release-name=RELEASE meta.helm.sh/release-namespace=NAMESPACE --overwrite",
]


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[LocalCluster]:
    # Always a local control plane of its own, also when the session was pointed at a real
    # cluster: it installs and uninstalls cluster-wide CRDs, which no shared cluster may lose.
    with LocalCluster(bin_dir=build_toolchain()) as private:
        for ns in (NAMESPACE, TEAM):
            private.kubectl("create", "namespace", ns)
        yield private


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def helm(cluster: LocalCluster, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **cluster.env(),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(cluster.bin_dir / "helm"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def served_schema(cluster: LocalCluster, name: str) -> dict[str, Any]:
    crd = kubectl_json(cluster, "get", "crd", name)
    assert crd is not None, name
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def established(cluster: LocalCluster, name: str) -> bool:
    result = cluster.kubectl(
        "get",
        f"crd/{name}",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
        check=False,
    )
    return result.stdout.strip() == "True"


def custom(kind: str, name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": TEAM},
            "spec": spec,
        }
    )


def can_i(cluster: LocalCluster, user: str, verb: str, resource: str) -> bool:
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", TEAM, "--as", user, check=False)
    return result.stdout.strip() == "yes"


def test_the_stdout_stream_applies_and_is_served_as_the_models_say(
    own_cluster: LocalCluster,
) -> None:
    stream = subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli", "crds", "--stdout"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    own_cluster.kubectl("apply", "--server-side", "-f", "-", input=stream)
    for crd in generate_crds():
        name = crd["metadata"]["name"]
        wait_for(lambda name=name: established(own_cluster, name), timeout=60)
        served = served_schema(own_cluster, name)
        assert served == crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], name
    own_cluster.kubectl("apply", "-f", "-", input=custom("CleoBackup", "before-helm", GOOD_BACKUP))


def test_helm_adopts_crds_it_did_not_install_with_the_documented_commands(
    own_cluster: LocalCluster, helm_home: Path
) -> None:
    refused = helm(own_cluster, helm_home, "install", RELEASE, str(CHART), "-n", NAMESPACE)
    assert refused.returncode != 0
    assert "invalid ownership metadata" in refused.stderr, refused.stderr

    docs = (REPO / "docs" / "install.md").read_text()
    for command in ADOPT:
        assert command.replace("RELEASE", "cleo-operator").replace(
            "NAMESPACE", "cleo-system"
        ) in " ".join(docs.replace("\\\n", " ").split()), command
        args = command.replace("RELEASE", RELEASE).replace("NAMESPACE", NAMESPACE).split()
        own_cluster.kubectl(*args[1:])

    installed = helm(
        own_cluster, helm_home, "install", RELEASE, str(CHART), "-n", NAMESPACE, *AGGREGATED
    )
    assert installed.returncode == 0, installed.stderr
    for name in CRDS:
        crd = kubectl_json(own_cluster, "get", "crd", name)
        assert crd is not None
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_helm_upgrade_puts_a_new_field_of_a_crd_on_the_server(
    own_cluster: LocalCluster, helm_home: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "cleo-operator"
    shutil.copytree(CHART, chart)
    template = chart / "templates" / "crds" / "cleobackups.cleoai.io.yaml"
    text = template.read_text()
    anchor = "      openAPIV3Schema:\n"
    at = text.index("        properties:\n", text.index(anchor)) + len("        properties:\n")
    field = "          upgradeProbe:\n            type: string\n"
    template.write_text(text[:at] + field + text[at:])
    assert "upgradeProbe" not in served_schema(own_cluster, "cleobackups.cleoai.io")["properties"]

    upgraded = helm(
        own_cluster, helm_home, "upgrade", RELEASE, str(chart), "-n", NAMESPACE, *AGGREGATED
    )

    assert upgraded.returncode == 0, upgraded.stderr
    properties = served_schema(own_cluster, "cleobackups.cleoai.io")["properties"]
    assert properties["upgradeProbe"] == {"type": "string"}
    # Back to the chart of the checkout: the field goes again.
    again = helm(
        own_cluster, helm_home, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, *AGGREGATED
    )
    assert again.returncode == 0, again.stderr
    assert "upgradeProbe" not in served_schema(own_cluster, "cleobackups.cleoai.io")["properties"]


TENANT_KINDS = ("cleobackups.cleoai.io", "cleofailovers.cleoai.io")
AGGREGATED = ("--set", "aggregatedRoles.enabled=true")  # opt-in; the tests below use them


@pytest.mark.security
@pytest.mark.parametrize("role", ["cleo-tenant-admin", "cleo-tenant-viewer"])
def test_tenant_admins_and_viewers_read_backups_and_failovers_and_change_none(
    own_cluster: LocalCluster, helm_home: Path, role: str
) -> None:
    del helm_home
    user = f"{role}-user"
    own_cluster.kubectl(
        "create", "rolebinding", role, f"--clusterrole={role}", f"--user={user}", "-n", TEAM
    )
    for resource in TENANT_KINDS:
        for verb in ("get", "list", "watch"):
            assert can_i(own_cluster, user, verb, resource), (role, verb, resource)
        # Asking for a backup now is cleo-tenant-backup-requester's, which the operator
        # binds apart, only while the admission policy that narrows it is in place.
        for verb in ("update", "patch", "deletecollection", "create", "delete"):
            assert not can_i(own_cluster, user, verb, resource), (role, verb, resource)
    assert not can_i(own_cluster, user, "list", "cleotenants.cleoai.io")

    listed = own_cluster.kubectl("get", "cleobackups", "-n", TEAM, "--as", user, "-o", "name")
    assert "cleobackup.cleoai.io/before-helm" in listed.stdout
    refused = [("CleoFailover", GOOD_FAILOVER), ("CleoBackup", GOOD_BACKUP)]
    for kind, spec in refused:
        created = own_cluster.kubectl(
            "create", "--as", user, "-f", "-", input=custom(kind, "by-tenant", spec), check=False
        )
        assert created.returncode != 0
        assert "forbidden" in created.stderr.lower(), created.stderr
    patched = own_cluster.kubectl(
        "patch", "cleobackup", "before-helm", "-n", TEAM, "--as", user, "--type=merge",
        "-p", '{"spec": {"suspend": true}}', check=False,
    )  # fmt: skip
    assert "forbidden" in patched.stderr.lower(), patched.stderr


def test_namespace_view_and_edit_aggregate_the_namespaced_kinds(
    own_cluster: LocalCluster, helm_home: Path
) -> None:
    del helm_home
    for role in ("view", "edit", "admin"):
        own_cluster.kubectl(
            "create", "rolebinding", f"ns-{role}", f"--clusterrole={role}",
            f"--user=ns-{role}", "-n", TEAM,
        )  # fmt: skip
    # The aggregation controller fills the default roles asynchronously.
    for role in ("view", "edit", "admin"):
        wait_for(
            lambda role=role: can_i(own_cluster, f"ns-{role}", "list", "cleobackups.cleoai.io"),
            timeout=60,
        )
    for resource in TENANT_KINDS:
        assert can_i(own_cluster, "ns-view", "watch", resource)
        assert not can_i(own_cluster, "ns-view", "create", resource)
        for role in ("edit", "admin"):
            assert can_i(own_cluster, f"ns-{role}", "list", resource), (role, resource)
            for verb in ("create", "update", "patch", "delete"):
                # Backups may be asked for; a failover moves the tenant's database, and the
                # procedure trusts what its object carries: the platform team's alone.
                allowed = resource == "cleobackups.cleoai.io"
                assert can_i(own_cluster, f"ns-{role}", verb, resource) is allowed, (
                    role,
                    verb,
                    resource,
                )
    for role in ("view", "edit", "admin"):
        assert not can_i(own_cluster, f"ns-{role}", "list", "cleotenants.cleoai.io")
    own_cluster.kubectl(
        "create", "--as", "ns-edit", "-f", "-", input=custom("CleoBackup", "by-edit", GOOD_BACKUP)
    )


def test_uninstall_keeps_the_crds_and_the_custom_resources(
    own_cluster: LocalCluster, helm_home: Path
) -> None:
    removed = helm(own_cluster, helm_home, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    assert removed.returncode == 0, removed.stderr
    assert helm(own_cluster, helm_home, "status", RELEASE, "-n", NAMESPACE).returncode != 0
    for name in CRDS:
        assert kubectl_json(own_cluster, "get", "crd", name) is not None, name
        assert established(own_cluster, name)
    backups = kubectl_json(own_cluster, "get", "cleobackups", "-n", TEAM)
    assert backups is not None
    assert sorted(b["metadata"]["name"] for b in backups["items"]) == ["before-helm", "by-edit"]
    # The aggregated roles went with the release (they carry no keep annotation).
    wait_for(
        lambda: not can_i(own_cluster, "ns-edit", "create", "cleobackups.cleoai.io"), timeout=60
    )
