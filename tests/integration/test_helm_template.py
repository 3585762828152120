"""The chart rendered by the real Helm over the value sets users write, and refusing bad ones.

What a user would notice: `helm lint --strict` passes; every value set renders objects that
do what the values say; the RBAC the chart grants is exactly operator/cleo_operator/kube/
permissions.py (nothing missing, nothing extra, no wildcard, and nothing of what only tenant
admins need, such as pods/exec); the tenant ClusterRoles it ships grant exactly the rules of
render/rbac.py; the site configuration it
renders is one the data layer accepts; and a misspelt or ill-typed value fails at
`helm template` with a message that names the value.

Helm is the one the toolchain builds from its Go module (e2e/toolchain/helm); no cluster is
needed here.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.data.sites import load_site_config
from cleo_operator.kube.permissions import Scope, grants, permissions_for
from cleo_operator.render.pooler import DEFAULT_POOLER_IMAGE
from cleo_operator.render.rbac import BACKUP_REQUESTER_ROLE, TENANT_ROLES, tenant_role_rules
from e2e.cluster import build_toolchain

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cleo-operator"
RELEASE = "cleo-operator"
NAMESPACE = "cleo-system"
TENANT_ROLE = f"{RELEASE}-tenant"

SITES: dict[str, Any] = {
    "eu-west-1": {
        "host": "pg-eu-west-1.db.internal",
        "sslMode": "verify-full",
        "sslRootCert": "/etc/cleo/pg-ca/ca.crt",
        "adminSecret": {"name": "pg-admin-eu-west-1"},
        "standby": "eu-west-2",
    },
    "eu-west-2": {
        "host": "pg-eu-west-2.db.internal",
        "port": 5433,
        "pool": {"minSize": 1, "maxSize": 8},
        "connectTimeoutSeconds": 3,
        "adminSecret": {"name": "pg-admin-eu-west-2", "namespace": "db-admins"},
    },
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sites": {"sites": SITES},
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    },
    "network-policy": {
        "sites": SITES,
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]},
            "databases": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
            "metrics": {"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        },
    },
    "namespace-scoped": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "backup-runner": {
        "imagePullSecrets": [{"name": "regcred"}],
        "backup": {
            "image": {"repository": "mirror.example/cleo-operator", "pullPolicy": "Always"},
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
            "egress": {"apiServer": ["10.0.0.1/32"], "objectStorage": ["10.42.7.0/24"]},
        },
    },
    "tenant-roles-elsewhere": {"rbac": {"createTenantRoles": False}},
    "admission-off": {"admission": {"tenantProtection": {"enabled": False}}},
    "kek-secret": {"kek": {"secretName": "cleo-kek"}, "podDisruptionBudget": {"enabled": True}},
    "one-replica": {"replicaCount": 1},
    "leader-election": {
        "replicaCount": 3,
        "leaderElection": {
            "leaseDurationSeconds": 30,
            "renewDeadlineSeconds": 20,
            "retryPeriodSeconds": 0.5,
        },
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                    ]
                }
            }
        },
    },
    "tracing": {
        "tracing": {
            "enabled": True,
            "endpoint": "http://otel-collector.observability:4318",
            "samplerRatio": 0.25,
            "collector": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                },
                "podSelector": {"matchLabels": {"app": "otel-collector"}},
            },
        },
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]},
        },
    },
    "kek-csi": {
        "kek": {
            "volume": {"csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True}},
            "mountPath": "/var/run/cleo/kek",
        }
    },
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command prefix that runs the toolchain's helm with its state in a temp folder."""
    home = tmp_path_factory.mktemp("helm-home")
    binary = build_toolchain() / "helm"
    return [
        "env",
        f"HELM_CACHE_HOME={home / 'cache'}",
        f"HELM_CONFIG_HOME={home / 'config'}",
        f"HELM_DATA_HOME={home / 'data'}",
        str(binary),
    ]


def run_helm(helm: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


_RENDERED: dict[str, list[dict[str, Any]]] = {}
"""`helm template` output by values: the chart does not change during a run, and many tests
read the same rendering (each helm run is a Go program started anew, about half a second)."""


def render(helm: list[str], tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart rendered with `values`; a fresh copy, for the test to change at will."""
    key = json.dumps(values, sort_keys=True)
    if key not in _RENDERED:
        _RENDERED[key] = _render(helm, tmp_path, values)
    return copy.deepcopy(_RENDERED[key])


def _render(helm: list[str], tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    result = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values_file(tmp_path, values)),
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def granted(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """Every (group, resource, verb, name) a role's rules grant; "" for any name."""
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = only(objects, "Deployment", RELEASE)
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict_passes(helm: list[str], tmp_path: Path, name: str) -> None:
    result = run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        "--values",
        str(values_file(tmp_path, VALUE_SETS[name])),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


CLUSTER_SCOPED = {
    "ClusterRole",
    "CustomResourceDefinition",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_labelled_and_placed_in_its_namespace(
    helm: list[str], tmp_path: Path, name: str
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS[name])
    watched = VALUE_SETS[name].get("operator", {}).get("watchNamespaces", [])
    for obj in objects:
        meta = obj["metadata"]
        where = f"{obj['kind']} {meta['name']}"
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, where
        assert meta["labels"]["app.kubernetes.io/part-of"] == "cleo-operator", where
        assert len(meta["name"]) <= 63, where
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, where
        else:
            assert meta.get("namespace") in {NAMESPACE, "default", *watched}, where


# --------------------------------------------------------------------------- RBAC


def test_rbac_grants_exactly_the_permissions_in_code(helm: list[str], tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {})
    expected: dict[str, tuple[str, list[Scope]]] = {
        RELEASE: ("ClusterRole", ["cluster"]),
        f"{RELEASE}-watch": ("ClusterRole", ["watch"]),
        f"{RELEASE}-tenant": ("ClusterRole", ["tenant"]),
    }
    for name, (kind, scopes) in expected.items():
        got = granted(only(objects, kind, name))
        wanted = grants(scopes, permissions_for(TENANT_ROLE))
        assert got == wanted, (
            f"{kind} {name} differs from kube/permissions.py (scopes {scopes}): "
            f"missing {sorted(wanted - got)}, extra {sorted(got - wanted)}"
        )
    role = only(objects, "Role", RELEASE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert granted(role) == grants(["operator"])
    events = only(objects, "Role", f"{RELEASE}-events")
    assert events["metadata"]["namespace"] == "default"
    assert granted(events) == grants(["cluster-events"])
    for obj in find(objects, "ClusterRole") + find(objects, "Role"):
        for rule in obj["rules"]:
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], obj


def test_the_operators_roles_hold_nothing_it_only_used_to_grant_onward(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, {})
    operator_roles = [
        only(objects, "ClusterRole", RELEASE),
        only(objects, "ClusterRole", f"{RELEASE}-watch"),
        only(objects, "ClusterRole", f"{RELEASE}-tenant"),
        only(objects, "Role", RELEASE),
    ]
    held = set().union(*(granted(role) for role in operator_roles))
    resources = {resource for _, resource, _, _ in held}
    assert "pods/exec" not in resources
    assert "pods/log" not in resources
    assert not {g for g in held if g[2] in ("deletecollection", "escalate")}
    # The one update: the renew of its own leader Lease, by name.
    assert {g for g in held if g[2] == "update"} == {
        ("coordination.k8s.io", "leases", "update", "cleo-operator-leader")
    }
    # On ClusterRoles: bind and get, and only on the two tenant ClusterRoles and its own
    # tenant ClusterRole, by name.
    on_cluster_roles = {g for g in held if g[1] == "clusterroles"}
    assert on_cluster_roles == {
        ("rbac.authorization.k8s.io", "clusterroles", verb, name)
        for verb in ("bind", "get")
        for name in (*TENANT_ROLES, BACKUP_REQUESTER_ROLE, TENANT_ROLE)
    }


def test_the_tenant_cluster_roles_grant_the_rules_of_the_code(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, {})
    for name, rules in tenant_role_rules().items():
        role = only(objects, "ClusterRole", name)
        assert role["rules"] == rules, name
        meta = role["metadata"]
        # Uninstalling the operator must not strip tenant admins of their rights.
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["labels"]["app.kubernetes.io/component"] == "tenant-access"
    # Cluster-wide names, so one release creates them; the others (or kubectl) may not.
    elsewhere = render(helm, tmp_path, VALUE_SETS["tenant-roles-elsewhere"])
    assert not [o for o in find(elsewhere, "ClusterRole") if o["metadata"]["name"] in TENANT_ROLES]
    # The operator may still bind them, wherever they come from.
    assert granted(only(elsewhere, "ClusterRole", f"{RELEASE}-tenant")) == grants(["tenant"])
    assert {
        name for *_, name in granted(only(elsewhere, "ClusterRole", f"{RELEASE}-tenant"))
    } >= set(TENANT_ROLES)


def test_cluster_wide_install_binds_cluster_and_watch_roles_never_the_tenant_role(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, {})
    sa = only(objects, "ServiceAccount", RELEASE)
    assert sa["metadata"]["namespace"] == NAMESPACE
    bindings = {b["roleRef"]["name"]: b for b in find(objects, "ClusterRoleBinding")}
    # The tenant role (Secrets, Jobs, bindings...) is bound by the operator per tenant
    # namespace, never by the chart.
    assert set(bindings) == {RELEASE, f"{RELEASE}-watch"}
    assert not [
        b
        for b in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding")
        if b["roleRef"]["name"] == TENANT_ROLE
    ]
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert env["CLEO_OPERATOR_TENANT_ROLE"] == TENANT_ROLE
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]
    role_binding = only(objects, "RoleBinding", RELEASE)
    assert role_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": RELEASE,
    }
    assert "--namespace" not in " ".join(container(objects)["args"])


def test_namespace_scoped_install_binds_tenant_rights_only_in_watched_namespaces(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["namespace-scoped"])
    cluster_bindings = {b["roleRef"]["name"] for b in find(objects, "ClusterRoleBinding")}
    assert cluster_bindings == {RELEASE}, "watch rights must not be bound cluster-wide"
    tenant_bindings = [
        b for b in find(objects, "RoleBinding") if b["roleRef"]["name"] == f"{RELEASE}-watch"
    ]
    assert not [b for b in find(objects, "RoleBinding") if b["roleRef"]["name"] == TENANT_ROLE]
    assert sorted(b["metadata"]["namespace"] for b in tenant_bindings) == ["team-a", "team-b"]
    for binding in tenant_bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    args = container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_rbac_create_false_renders_no_rbac(helm: list[str], tmp_path: Path) -> None:
    # Not even the tenant ClusterRoles (createTenantRoles defaults to true): whoever grants
    # the operator's RBAC also installs those, from deploy/rbac/tenant-roles.yaml.
    objects = render(helm, tmp_path, {"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not find(objects, kind), kind
    assert find(objects, "Deployment")


# --------------------------------------------------------------------------- the Deployment


def test_defaults_run_two_locked_down_replicas_of_cleo_operator_run(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, {})
    deployment = only(objects, "Deployment", RELEASE)
    assert deployment["metadata"]["namespace"] == NAMESPACE
    spec = deployment["spec"]
    # A hot standby: the new pod of a rollout starts (as a standby) before an old one stops.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == RELEASE
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objects)
    assert c["command"] == ["cleo-operator"]
    args = c["args"]
    assert args.index("--log-level=INFO") < args.index("run") < args.index("--workers=8")
    assert f"--operator-namespace={NAMESPACE}" in args
    assert "--metrics-port=8080" in args
    assert "--liveness=http://0.0.0.0:8081/healthz" in args
    assert args[-3:] == [
        "--leader-election-lease-duration=15",
        "--leader-election-renew-deadline=10",
        "--leader-election-retry-period=2",
    ]
    # The replica's name in the leader Lease comes from the downward API.
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c[
        "env"
    ]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    assert c["resources"]["limits"]["memory"] == "512Mi"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    # The ClusterRole it binds itself to in tenant namespaces, its namespace, the backup
    # runner's image (tests/integration/test_helm_backup.py follows the `backup` values)
    # and the tenants' PgBouncer image, the operator's own default.
    assert [e for e in c.get("env") or [] if e["name"].startswith("CLEO_")] == [
        {"name": "CLEO_OPERATOR_TENANT_ROLE", "value": TENANT_ROLE},
        {"name": "CLEO_OPERATOR_NAMESPACE", "value": NAMESPACE},
        {"name": "CLEO_OPERATOR_IMAGE", "value": c["image"]},
        {"name": "CLEO_OPERATOR_IMAGE_PULL_POLICY", "value": "IfNotPresent"},
        {
            # The pod's own selector labels: only it may reach the tenants' pools.
            "name": "CLEO_OPERATOR_POD_LABELS",
            "value": f"app.kubernetes.io/name=cleo-operator,app.kubernetes.io/instance={RELEASE}",
        },
        {"name": "CLEO_POOLER_IMAGE", "value": DEFAULT_POOLER_IMAGE},
        {"name": "CLEO_CLUSTER_DOMAIN", "value": "cluster.local"},
    ]
    service = only(objects, "Service", f"{RELEASE}-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    for kind in ("ServiceMonitor", "PrometheusRule", "NetworkPolicy"):
        assert not find(objects, kind), f"{kind} is optional and off by default"
    # The two replicas prefer different nodes, and a drain never evicts both.
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": spec["selector"]["matchLabels"]},
    }
    pdb = only(objects, "PodDisruptionBudget", RELEASE)
    assert pdb["spec"] == {"minAvailable": 1, "selector": spec["selector"]}


def test_sites_render_a_configuration_the_data_layer_accepts(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["sites"])
    config_map = only(objects, "ConfigMap", f"{RELEASE}-sites")
    sites = load_site_config(
        config_map["data"]["sites.yaml"],
        source="the chart's ConfigMap",
        read_ca_files=False,  # the CA is mounted in the operator's pod, not here
    )
    assert set(sites) == {"eu-west-1", "eu-west-2"}
    first, second = sites["eu-west-1"], sites["eu-west-2"]
    assert first.sslmode == "verify-full"
    assert first.standby == "eu-west-2"
    # The admin Secret's namespace defaults to the release's, where the Role lets it read.
    assert first.admin_secret is not None
    assert first.admin_secret.namespace == NAMESPACE
    assert second.admin_secret is not None
    assert second.admin_secret.namespace == "db-admins"
    assert (second.port, second.pool_min_size, second.pool_max_size) == (5433, 1, 8)

    c = container(objects)
    env = {e["name"]: e.get("value") for e in c["env"]}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "sites")
    assert env["CLEO_SITES_FILE"] == f"{mount['mountPath']}/sites.yaml"
    pod = only(objects, "Deployment")["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "sites")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]

    # Changing a site changes the pod template, so the operator restarts onto it.
    changed = {"sites": {**SITES, "eu-west-2": {**SITES["eu-west-2"], "port": 5434}}}
    other = only(render(helm, tmp_path, changed), "Deployment")["spec"]["template"]
    assert (
        other["metadata"]["annotations"]["checksum/sites"]
        != pod["metadata"]["annotations"]["checksum/sites"]
    )


def test_the_drill_site_reaches_the_operator_only_when_it_is_a_site(
    helm: list[str], tmp_path: Path
) -> None:
    def env(values: dict[str, Any]) -> dict[str, str | None]:
        return {e["name"]: e.get("value") for e in container(render(helm, tmp_path, values))["env"]}

    assert "CLEO_DRILL_SITE" not in env({"sites": SITES})
    assert env({"sites": SITES, "drillSite": "eu-west-2"})["CLEO_DRILL_SITE"] == "eu-west-2"
    values = values_file(tmp_path, {"sites": SITES, "drillSite": "elsewhere"})
    refused = run_helm(helm, "template", RELEASE, str(CHART), "--values", str(values))
    assert refused.returncode != 0
    assert 'drillSite: "elsewhere" is not one of sites' in refused.stderr


@pytest.mark.security
def test_the_operators_own_pull_secrets_are_never_copied_for_the_runner(
    helm: list[str], tmp_path: Path
) -> None:
    """The copies of backup.imagePullSecrets are readable by tenant admins: the operator's
    own imagePullSecrets (often the organisation's credential) must never become them."""

    def env(values: dict[str, Any]) -> dict[str, str | None]:
        return {e["name"]: e.get("value") for e in container(render(helm, tmp_path, values))["env"]}

    assert "CLEO_BACKUP_IMAGE_PULL_SECRETS" not in env({"imagePullSecrets": [{"name": "regcred"}]})
    explicit = {
        "imagePullSecrets": [{"name": "regcred"}],
        "backup": {"imagePullSecrets": [{"name": "runner-pull"}, {"name": "mirror-pull"}]},
    }
    assert env(explicit)["CLEO_BACKUP_IMAGE_PULL_SECRETS"] == "runner-pull,mirror-pull"


@pytest.mark.parametrize(
    ("name", "volume_key", "mount_path"),
    [("kek-secret", "secret", "/etc/cleo/kek"), ("kek-csi", "csi", "/var/run/cleo/kek")],
)
def test_kek_provider_is_mounted_and_named_by_cleo_kek_dir(
    helm: list[str], tmp_path: Path, name: str, volume_key: str, mount_path: str
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS[name])
    c = container(objects)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CLEO_KEK_DIR"] == mount_path
    mount = next(m for m in c["volumeMounts"] if m["name"] == "kek")
    assert mount == {"name": "kek", "mountPath": mount_path, "readOnly": True}
    volumes = only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volume_key in next(v for v in volumes if v["name"] == "kek")


def test_one_replica_gets_a_budget_that_never_blocks_a_drain(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["one-replica"])
    assert only(objects, "Deployment", RELEASE)["spec"]["replicas"] == 1
    pdb = only(objects, "PodDisruptionBudget", RELEASE)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    off = render(helm, tmp_path, {"podDisruptionBudget": {"enabled": False}})
    assert not find(off, "PodDisruptionBudget")


def test_leader_election_values_reach_the_operator_and_affinity_can_be_replaced(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["leader-election"])
    c = container(objects)
    assert c["args"][-3:] == [
        "--leader-election-lease-duration=30",
        "--leader-election-renew-deadline=20",
        "--leader-election-retry-period=0.5",
    ]
    deployment = only(objects, "Deployment", RELEASE)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": VALUE_SETS["leader-election"]["affinity"]["nodeAffinity"]
    }


def test_the_operators_role_holds_only_its_one_lease_by_name(
    helm: list[str], tmp_path: Path
) -> None:
    role = only(render(helm, tmp_path, {}), "Role", RELEASE)
    leases = {g for g in granted(role) if g[1] == "leases"}
    assert leases == {
        ("coordination.k8s.io", "leases", "get", "cleo-operator-leader"),
        ("coordination.k8s.io", "leases", "update", "cleo-operator-leader"),
        # RBAC cannot limit a create by name; the Role holds it in its namespace only.
        ("coordination.k8s.io", "leases", "create", ""),
    }


# --------------------------------------------------------------------------- monitoring


def test_monitoring_objects_carry_the_kit_of_deploy_monitoring(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["monitoring"])
    monitor = only(objects, "ServiceMonitor", RELEASE)
    service = only(objects, "Service", f"{RELEASE}-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # The alerts select job="cleo-operator": the job label must say so for any release name.
    job_label = monitor["spec"]["jobLabel"]
    assert service["metadata"]["labels"][job_label] == "cleo-operator"

    rule = only(objects, "PrometheusRule", RELEASE)
    kit = yaml.safe_load((REPO / "deploy" / "monitoring" / "cleo-operator.rules.yaml").read_text())
    assert rule["spec"] == kit

    dashboards = only(objects, "ConfigMap", f"{RELEASE}-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((REPO / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    assert json.loads(dashboards["data"]["cleo-operator.json"]) == shipped


def test_alert_thresholds_and_runbook_links_are_chart_values(
    helm: list[str], tmp_path: Path
) -> None:
    values: dict[str, Any] = copy.deepcopy(VALUE_SETS["monitoring"])
    values["metrics"]["prometheusRule"].update(
        runbookBaseURL="https://wiki.example.org/cleo/runbooks/",
        thresholds={
            "operatorDownFor": "3m",
            "reconcileErrorsFor": "1h",
            "tenantNotReadyFor": "45m",
            "backupMaxAgeHours": 50,
            "verificationMaxAgeDays": 15,
            "keyRotationOverdueSeconds": 7200,
        },
    )
    rule = only(render(helm, tmp_path, values), "PrometheusRule", RELEASE)
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert alerts["CleoOperatorDown"]["for"] == "3m"
    assert alerts["CleoOperatorReconcileErrors"]["for"] == "1h"
    assert alerts["CleoTenantNotReady"]["for"] == "45m"
    assert alerts["CleoBackupTooOld"]["expr"].endswith("> 50 * 3600")
    assert alerts["CleoBackupNotVerified"]["expr"].endswith("> 15 * 86400")
    assert alerts["CleoKeyRotationOverdue"]["expr"].endswith("> 7200")
    for name, alert in alerts.items():
        assert alert["annotations"]["runbook_url"] == (
            f"https://wiki.example.org/cleo/runbooks/{name}.md"
        )
    # The texts say the thresholds too.
    assert alerts["CleoOperatorDown"]["annotations"]["summary"].endswith("for 3m")
    assert "for 1h." in alerts["CleoOperatorReconcileErrors"]["annotations"]["description"]
    assert alerts["CleoTenantNotReady"]["annotations"]["summary"].endswith("for 45m")
    assert alerts["CleoBackupTooOld"]["annotations"]["summary"].endswith("over 50 hours")
    assert alerts["CleoBackupNotVerified"]["annotations"]["summary"].endswith("for 15 days")
    # Nothing else of the rules changed.
    kit = yaml.safe_load((REPO / "deploy" / "monitoring" / "cleo-operator.rules.yaml").read_text())
    defaults = {r["alert"]: r for group in kit["groups"] for r in group["rules"]}
    assert alerts.keys() == defaults.keys()
    for name, alert in alerts.items():
        assert alert["labels"] == defaults[name]["labels"], name
        assert alert["annotations"].keys() == defaults[name]["annotations"].keys(), name


def test_network_policy_allows_only_what_the_operator_talks_to(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["network-policy"])
    policy = only(objects, "NetworkPolicy", RELEASE)
    spec = policy["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    deployment = only(objects, "Deployment")
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    by_port = {port["port"]: rule.get("to") for rule in spec["egress"] for port in rule["ports"]}
    assert by_port[443] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert by_port[53] is not None  # DNS only to the cluster's DNS pods
    # The sites' ports: eu-west-1 the default 5432, eu-west-2 5433.
    assert {5432, 5433} <= set(by_port)
    # The tenants' poolers, for the login behind PoolerReady: their pods only.
    assert by_port[6432] == [
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "cleoai.io/tenant", "operator": "Exists"}]
            },
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cleo-pooler"}},
        }
    ]
    assert set(by_port) == {443, 6443, 53, 5432, 5433, 6432}
    assert by_port[5432] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    # No rule is open to every address: each has peers.
    assert all(rule.get("to") for rule in spec["egress"])


def test_tracing_is_off_by_default_and_its_values_set_the_otel_variables(
    helm: list[str], tmp_path: Path
) -> None:
    defaults = container(render(helm, tmp_path, {}))
    assert not [e for e in defaults["env"] if e["name"].startswith("OTEL_")]
    default_policy = only(
        render(helm, tmp_path, {"networkPolicy": VALUE_SETS["tracing"]["networkPolicy"]}),
        "NetworkPolicy",
    )
    assert 4318 not in {p["port"] for r in default_policy["spec"]["egress"] for p in r["ports"]}

    objects = render(helm, tmp_path, VALUE_SETS["tracing"])
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_SERVICE_NAME": "cleo-operator",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_RESOURCE_ATTRIBUTES": f"k8s.namespace.name={NAMESPACE}",
    }
    # What the operator reads from them (observability/tracing.py).
    from cleo_operator.observability.tracing import TracingSettings  # noqa: PLC0415

    settings = TracingSettings.from_environment({k: str(v) for k, v in env.items()})
    assert settings.enabled
    assert settings.endpoint == "http://otel-collector.observability:4318/v1/traces"
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", "0.25")

    # The operator's NetworkPolicy: the collector's pods, on its port, and nothing more.
    policy = only(objects, "NetworkPolicy", RELEASE)
    rules = [r for r in policy["spec"]["egress"] if {"port": 4318, "protocol": "TCP"} in r["ports"]]
    assert rules == [
        {
            "ports": [{"port": 4318, "protocol": "TCP"}],
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    },
                    "podSelector": {"matchLabels": {"app": "otel-collector"}},
                }
            ],
        }
    ]
    by_cidr = json.loads(json.dumps(VALUE_SETS["tracing"]))
    by_cidr["tracing"]["collector"] = {"ipBlock": {"cidr": "10.30.0.5/32"}, "port": 4319}
    policy = only(render(helm, tmp_path, by_cidr), "NetworkPolicy", RELEASE)
    rules = [r for r in policy["spec"]["egress"] if {"port": 4319, "protocol": "TCP"} in r["ports"]]
    assert [r["to"] for r in rules] == [[{"ipBlock": {"cidr": "10.30.0.5/32"}}]]


@pytest.mark.security
def test_tracing_without_a_collector_peer_fails_instead_of_allowing_every_address(
    helm: list[str], tmp_path: Path
) -> None:
    values = json.loads(json.dumps(VALUE_SETS["tracing"]))
    del values["tracing"]["collector"]
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "-f", str(values_file(tmp_path, values))
    )
    assert result.returncode != 0, result.stdout
    assert "tracing.collector names no peer" in result.stderr, result.stderr


NO_PEERS: dict[str, Any] = {
    "sites": SITES,
    "networkPolicy": {
        "enabled": True,
        "apiServer": {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]},
        "databases": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
    },
}


@pytest.mark.security
@pytest.mark.parametrize("peers", ["apiServer.to", "dns.to", "databases.to"])
def test_an_empty_list_of_peers_fails_instead_of_allowing_every_address(
    helm: list[str], tmp_path: Path, peers: str
) -> None:
    values = json.loads(json.dumps(NO_PEERS))
    group, key = peers.split(".")
    values["networkPolicy"].setdefault(group, {})[key] = []
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(path))
    assert result.returncode != 0, result.stdout
    assert f"networkPolicy.{peers} is empty" in result.stderr, result.stderr
    assert "0.0.0.0/0" in result.stderr  # how to allow any address, explicitly


@pytest.mark.security
def test_no_scrapers_named_means_no_ingress_rule(helm: list[str], tmp_path: Path) -> None:
    policy = only(render(helm, tmp_path, NO_PEERS), "NetworkPolicy", RELEASE)
    assert policy["spec"]["ingress"] == []  # not a rule open to every source
    assert "Ingress" in policy["spec"]["policyTypes"]
    assert all(rule.get("to") for rule in policy["spec"]["egress"])


# --------------------------------------------------------------------------- bad values


def site_set(*extra: str) -> list[str]:
    """`--set` of a valid site `eu` plus `extra` settings of it."""
    return ["--set", ",".join(["sites.eu.host=h", "sites.eu.adminSecret.name=s", *extra])]


# --------------------------------------------------------------------------- admission

TENANT_PROTECTION = REPO / "deploy" / "admission" / "tenant-protection.yaml"
PROTECTION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _tenant_protection(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tenant-protection policy and binding (the chart ships the operator-scope pair too)."""
    return [
        o
        for o in objects
        if o["kind"] in PROTECTION_KINDS and o["metadata"]["name"] == "cleo-tenant-protection"
    ]


def _without_labels(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "labels"}}


def test_the_chart_ships_the_tenant_protection_policy_of_deploy(
    helm: list[str], tmp_path: Path
) -> None:
    """Default install (cleo-system, ServiceAccount cleo-operator): the same policy as the
    static deploy/admission/tenant-protection.yaml, and the chart's copy is that file."""
    assert (CHART / "files" / "tenant-protection.yaml").read_text() == (
        TENANT_PROTECTION.read_text()
    ), "charts/cleo-operator/files/tenant-protection.yaml: copy the deploy/admission file"
    objects = render(helm, tmp_path, {})
    rendered = [_without_labels(o) for o in _tenant_protection(objects)]
    shipped = [_without_labels(d) for d in yaml.safe_load_all(TENANT_PROTECTION.read_text()) if d]
    assert rendered == shipped
    for obj in _tenant_protection(objects):
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "admission"


def test_the_tenant_protection_policy_trusts_this_releases_operator(
    helm: list[str], tmp_path: Path
) -> None:
    result = run_helm(
        helm,
        "template",
        "team-ops",
        str(CHART),
        "--namespace",
        "ops",
        "--set",
        "admission.tenantProtection.trustedUsers[0]=system:serviceaccount:other:op",
    )
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    policy = only(objects, "ValidatingAdmissionPolicy", "cleo-tenant-protection")
    condition = policy["spec"]["matchConditions"][0]["expression"]
    assert '"system:serviceaccount:ops:team-ops-cleo-operator"' in condition
    assert '"system:serviceaccount:other:op"' in condition
    assert "cleo-system" not in condition


def test_admission_off_renders_no_policy(helm: list[str], tmp_path: Path) -> None:
    objects = render(helm, tmp_path, VALUE_SETS["admission-off"])
    assert _tenant_protection(objects) == []


BAD_VALUES: list[tuple[str, list[str], str]] = [
    ("port out of range", site_set("sites.eu.port=70000"), "/sites/eu/port"),
    ("site without host", ["--set", "sites.eu.adminSecret.name=s"], "/sites/eu"),
    ("unknown sslMode", site_set("sites.eu.sslMode=on"), "/sites/eu/sslMode"),
    ("unknown site key", site_set("sites.eu.hots=x"), "hots"),
    ("standby not defined", site_set("sites.eu.standby=us"), "sites.eu.standby"),
    ("own standby", site_set("sites.eu.standby=eu"), "sites.eu.standby"),
    (
        "pool inverted",
        site_set("sites.eu.pool.minSize=9", "sites.eu.pool.maxSize=2"),
        "sites.eu.pool.maxSize",
    ),
    ("workers zero", ["--set", "operator.workers=0"], "/operator/workers"),
    ("workers not a number", ["--set-string", "operator.workers=many"], "/operator/workers"),
    ("log format", ["--set", "operator.logFormat=xml"], "/operator/logFormat"),
    (
        "bad namespace",
        ["--set", "operator.watchNamespaces[0]=Team_A"],
        "/operator/watchNamespaces/0",
    ),
    ("misspelt top-level value", ["--set", "replicas=2"], "replicas"),
    ("no replica", ["--set", "replicaCount=0"], "/replicaCount"),
    (
        "lease of a fraction of a second",
        ["--set", "leaderElection.leaseDurationSeconds=4.5"],
        "/leaderElection/leaseDurationSeconds",
    ),
    (
        "renew deadline not below the lease",
        ["--set", "leaderElection.renewDeadlineSeconds=15"],
        "leaderElection.renewDeadlineSeconds",
    ),
    (
        "retry period not below the renew deadline",
        ["--set", "leaderElection.retryPeriodSeconds=10"],
        "leaderElection.retryPeriodSeconds",
    ),
    (
        "trusted user with a quote",
        ["--set-json", 'admission.tenantProtection.trustedUsers=["a\\"b"]'],
        "/admission/tenantProtection/trustedUsers/0",
    ),
    ("admission misspelt", ["--set", "admission.tenantProtection.enable=true"], "enable"),
    ("misspelt nested value", ["--set", "metrics.serviceMonitor.enable=true"], "enable"),
    ("digest", ["--set", "image.digest=latest"], "/image/digest"),
    (
        "runner pull secret not a DNS subdomain",
        ["--set", "backup.imagePullSecrets[0].name=Reg_Cred"],
        "/backup/imagePullSecrets/0/name",
    ),
    (
        "pdb zero",
        ["--set", "podDisruptionBudget.maxUnavailable=0"],
        "/podDisruptionBudget/maxUnavailable",
    ),
    ("kek twice", ["--set", "kek.secretName=k,kek.volume.csi.driver=d"], "kek.volume"),
    ("ports clash", ["--set", "health.port=8080"], "health.port"),
    ("no service account", ["--set", "serviceAccount.create=false"], "serviceAccount.name"),
    (
        "tenant roles flag",
        ["--set-string", "rbac.createTenantRoles=yes"],
        "/rbac/createTenantRoles",
    ),
    (
        "monitor without service",
        ["--set", "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false"],
        "metrics.serviceMonitor.enabled",
    ),
    (
        "alert duration",
        ["--set", "metrics.prometheusRule.thresholds.operatorDownFor=ten minutes"],
        "/metrics/prometheusRule/thresholds/operatorDownFor",
    ),
    (
        "alert threshold",
        ["--set", "metrics.prometheusRule.thresholds.backupMaxAgeHours=0"],
        "/metrics/prometheusRule/thresholds/backupMaxAgeHours",
    ),
    (
        "alert threshold name",
        ["--set", "metrics.prometheusRule.thresholds.backupMaxAge=30"],
        "backupMaxAge",
    ),
    (
        "tracing without endpoint",
        ["--set", "tracing.enabled=true"],
        "tracing.endpoint",
    ),
    ("tracing ratio", ["--set", "tracing.samplerRatio=2"], "/tracing/samplerRatio"),
    ("tracing endpoint", ["--set", "tracing.endpoint=collector:4318"], "/tracing/endpoint"),
    ("tracing misspelt", ["--set", "tracing.enable=true"], "enable"),
    (
        "runbook base",
        ["--set", "metrics.prometheusRule.runbookBaseURL=docs/runbooks"],
        "/metrics/prometheusRule/runbookBaseURL",
    ),
]


@pytest.mark.parametrize(
    ("args", "names"), [(a, n) for _, a, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_bad_values_fail_naming_the_value(helm: list[str], args: list[str], names: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"helm accepted {args}"
    assert names in result.stderr, result.stderr


# --------------------------------------------------------------------------- admission


def test_operator_scope_policy_matches_the_service_account_and_its_namespace(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, {})
    policy = only(objects, "ValidatingAdmissionPolicy", f"{RELEASE}-operator-scope")
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:{RELEASE}"'
    )
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["operatorNamespace"] == f"'{NAMESPACE}'"
    binding = only(objects, "ValidatingAdmissionPolicyBinding", f"{RELEASE}-operator-scope")
    assert binding["spec"] == {
        "policyName": f"{RELEASE}-operator-scope",
        "validationActions": ["Deny"],
    }
    other = render(helm, tmp_path, {"serviceAccount": {"create": False, "name": "ops"}})
    (condition,) = only(other, "ValidatingAdmissionPolicy", f"{RELEASE}-operator-scope")["spec"][
        "matchConditions"
    ]
    assert "system:serviceaccount:cleo-system:ops" in condition["expression"]
    off = render(helm, tmp_path, {"admission": {"operatorScope": {"enabled": False}}})
    assert [p["metadata"]["name"] for p in find(off, "ValidatingAdmissionPolicy")] == [
        "cleo-tenant-protection"
    ]


def test_deploy_copy_of_the_operator_scope_policy_is_the_charts(
    helm: list[str], tmp_path: Path
) -> None:
    """deploy/admission/operator-scope.yaml, for installs without Helm, is what the chart
    renders for the release cleo-operator in cleo-system (labels aside)."""
    objects = render(helm, tmp_path, {})
    committed = [
        d
        for d in yaml.safe_load_all(
            (REPO / "deploy" / "admission" / "operator-scope.yaml").read_text()
        )
        if d
    ]
    rendered = [
        only(objects, kind, f"{RELEASE}-operator-scope")
        for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    ]
    assert [(d["kind"], d["metadata"]["name"], d["spec"]) for d in committed] == [
        (d["kind"], d["metadata"]["name"], d["spec"]) for d in rendered
    ]


@pytest.mark.security
def test_tenant_admins_get_no_backup_requests_without_the_admission_policy(
    helm: list[str], tmp_path: Path
) -> None:
    # The policy narrows create/delete of CleoBackups to one-offs; without it, no such grant.
    with_policy = render(helm, tmp_path, {})
    assert (
        only(with_policy, "ClusterRole", BACKUP_REQUESTER_ROLE)["rules"]
        == (tenant_role_rules()[BACKUP_REQUESTER_ROLE])
    )
    without = render(helm, tmp_path, {"admission": {"tenantProtection": {"enabled": False}}})
    names = {o["metadata"]["name"] for o in find(without, "ClusterRole")}
    assert BACKUP_REQUESTER_ROLE not in names
    assert set(TENANT_ROLES) <= names
    assert not find(without, "ValidatingAdmissionPolicy", "cleo-tenant-protection")
