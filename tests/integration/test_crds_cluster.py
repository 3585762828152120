"""The generated CRDs on a real API server: Established, good objects accepted, bad ones
refused at `kubectl apply` with a message that names the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.scaling import render_hpa
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json
from tests.unit.test_api_autoscaling import (
    EVERY_SOURCE,
    FULL_BEHAVIOR,
    autoscaling,
    external_selector,
    pods_metric,
)
from tests.unit.test_api_autoscaling import REFUSED as AUTOSCALING_TYPOS
from tests.unit.test_api_backup import GOOD as GOOD_BACKUP
from tests.unit.test_api_failover import GOOD as GOOD_FAILOVER
from tests.unit.test_api_tenant import GOOD as GOOD_TENANT

pytestmark = pytest.mark.cluster

NS = "crd-checks"


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster, crds_installed: None) -> str:
    del crds_installed
    cluster.kubectl("create", "namespace", NS)
    return NS


def _obj(kind: str, name: str, spec: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "cleoai.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def _dry_run(cluster: LocalCluster, obj: dict[str, Any]) -> tuple[int, str]:
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-",
        input=json.dumps(obj), check=False,
    )  # fmt: skip
    return result.returncode, result.stderr


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `spec` with the dotted `path` (list indexes as numbers) set to `value`."""
    out = copy.deepcopy(spec)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def _drop(spec: dict[str, Any], key: str) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out.pop(key)
    return out


def test_every_crd_is_established(cluster: LocalCluster, crds_installed: None) -> None:
    del crds_installed
    for plural in ("cleotenants", "cleobackups", "cleofailovers"):
        crd = kubectl_json(cluster, "get", "crd", f"{plural}.cleoai.io")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
        assert crd["spec"]["names"]["categories"] == ["cleo"]


@pytest.mark.parametrize(
    ("kind", "spec", "namespaced"),
    [
        ("CleoTenant", GOOD_TENANT, False),
        ("CleoBackup", GOOD_BACKUP, True),
        ("CleoFailover", GOOD_FAILOVER, True),
    ],
)
def test_complete_good_objects_are_accepted(
    cluster: LocalCluster, namespace: str, kind: str, spec: dict[str, Any], namespaced: bool
) -> None:
    code, err = _dry_run(cluster, _obj(kind, "good", spec, namespace if namespaced else None))
    assert code == 0, err


def test_explain_reads_the_model_descriptions(cluster: LocalCluster, crds_installed: None) -> None:
    del crds_installed
    for path, field in (
        ("cleotenant.spec.autoscaling", CleoTenantSpec.model_fields["autoscaling"]),
        ("cleotenant.spec.deletionPolicy", CleoTenantSpec.model_fields["deletion_policy"]),
    ):
        out = cluster.kubectl("explain", path).stdout
        described = " ".join(out.split("DESCRIPTION:", 1)[1].split())
        assert field.description
        assert " ".join(field.description.split())[:40] in described, out


# (path to change, new value, what the API server's message must name)
BAD_TENANT_SPECS: list[tuple[str, Any, str]] = [
    ("deletionPolicy", "Keep", "spec.deletionPolicy"),
    ("namespace", "Acme", "spec.namespace"),
    ("namespace", "kube-system", "spec.namespace"),
    ("namespace", "kube-flannel", "spec.namespace"),
    # Zones of the cluster's DNS: <service>.<namespace>.svc names would be ambiguous.
    ("namespace", "svc", "spec.namespace"),
    ("namespace", "pod", "spec.namespace"),
    ("namespace", "x" * 64, "spec.namespace"),
    ("admins.0.kind", "Robot", "spec.admins[0].kind"),
    ("quota.cpu", "8 cores", "spec.quota.cpu"),
    ("quota.memory", "lots", "spec.quota.memory"),
    ("quota.cpu", -2, "spec.quota.cpu"),
    ("quota.pods", -1, "spec.quota.pods"),
    ("limits.maxCpu", "1.2.3", "spec.limits.maxCpu"),
    ("workload.image", "my image", "spec.workload.image"),
    ("workload.image", "", "spec.workload.image"),
    ("workload.port", 70000, "spec.workload.port"),
    ("workload.port", 0, "spec.workload.port"),
    ("workload.env.0.name", "LOG-LEVEL", "spec.workload.env[0].name"),
    ("workload.imagePullPolicy", "Sometimes", "spec.workload.imagePullPolicy"),
    ("workload.resources.requests.cpu", "-1", "spec.workload.resources.requests.cpu"),
    ("workload.resources.requests.gpu", 1, "spec.workload.resources.requests.gpu"),
    # A fractional exponent: Kubernetes' parser refuses it, and no Decimal reads it.
    ("workload.resources.requests.cpu", "1e1.5", "spec.workload.resources.requests.cpu"),
    ("quota.memory", "1e.5", "spec.quota.memory"),
    ("autoscaling.minReplicas", 11, "spec.autoscaling"),
    ("autoscaling.minReplicas", 0, "spec.autoscaling.minReplicas"),
    ("autoscaling.maxReplicas", -3, "spec.autoscaling.maxReplicas"),
    ("autoscaling.targetCPUUtilizationPercentage", 0, "spec.autoscaling.targetCPUUtilization"),
    ("autoscaling.targetMemoryUtilizationPercentage", 101, "spec.autoscaling.targetMemory"),
    ("secrets.0.name", "Open_AI", "spec.secrets[0].name"),
    ("secrets.0.name", "cleo-keyring", "spec.secrets[0].name"),
    ("encryption.rotationPeriod", "3 months", "spec.encryption.rotationPeriod"),
    ("database.connectionLimit", 5000, "spec.database.connectionLimit"),
    ("database.site", "EU", "spec.database.site"),
    ("database.passwordRotationPeriod", "1w", "spec.database.passwordRotationPeriod"),
    ("database.pooler.poolSize", 30, "spec.database.pooler.poolSize"),
    ("database.pooler.mode", "statement", "spec.database.pooler.mode"),
    ("database.pooler.maxClientConnections", 0, "spec.database.pooler.maxClientConnections"),
    ("database.enabled", False, "spec.database.pooler.enabled"),
    ("failover.failoverDelay", "soon", "spec.failover.failoverDelay"),
    ("network.databaseEgress.0.ports.0", 0, "spec.network.databaseEgress[0].ports[0]"),
    ("paused", "yes please", "spec.paused"),
    ("extra", 1, "spec.extra"),
    ("workload.unknown", True, "spec.workload.unknown"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    BAD_TENANT_SPECS,
    ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD_TENANT_SPECS],
)
def test_invalid_tenant_specs_are_refused_naming_the_field(
    cluster: LocalCluster, crds_installed: None, path: str, value: Any, field: str
) -> None:
    del crds_installed
    code, err = _dry_run(cluster, _obj("CleoTenant", "bad", _set(GOOD_TENANT, path, value), None))
    assert code != 0, f"{path}={value!r} was accepted"
    assert field in err, err


def test_at_least_25_invalid_tenant_specs_are_checked() -> None:
    assert len(BAD_TENANT_SPECS) >= 25


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("Acme", "metadata.name"),
        ("a" * 41, "metadata.name"),
        ("under_score", "metadata.name"),
    ],
)
def test_bad_tenant_names_are_refused(
    cluster: LocalCluster, crds_installed: None, name: str, field: str
) -> None:
    del crds_installed
    code, err = _dry_run(cluster, _obj("CleoTenant", name, GOOD_TENANT, None))
    assert code != 0
    assert "name" in err.lower(), err
    del field


def test_namespace_cannot_change_after_creation(
    cluster: LocalCluster, crds_installed: None
) -> None:
    del crds_installed
    spec = {"namespace": "fixed-ns", "paused": True}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_obj("CleoTenant", "fixed", spec, None)))
    try:
        for changed in ({**spec, "namespace": "other-ns"}, {"paused": True}):
            result = cluster.kubectl(
                "apply", "-f", "-",
                input=json.dumps(_obj("CleoTenant", "fixed", changed, None)), check=False,
            )  # fmt: skip
            assert result.returncode != 0
            assert "spec.namespace" in result.stderr, result.stderr
    finally:
        cluster.kubectl("delete", "cleotenant", "fixed", "--wait=false")


BAD_BACKUP_SPECS: list[tuple[str, Any, str]] = [
    ("schedule", "every day", "spec.schedule"),
    ("destination.type", "tape", "spec.destination.type"),
    ("retention.keepDaily", -1, "spec.retention.keepDaily"),
    ("verification.everyNth", 0, "spec.verification.everyNth"),
    ("concurrencyPolicy", "Sometimes", "spec.concurrencyPolicy"),
    ("historyLimit", 1000, "spec.historyLimit"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_BACKUP_SPECS)
def test_invalid_backup_specs_are_refused_naming_the_field(
    cluster: LocalCluster, namespace: str, path: str, value: Any, field: str
) -> None:
    obj = _obj("CleoBackup", "bad", _set(GOOD_BACKUP, path, value), namespace)
    code, err = _dry_run(cluster, obj)
    assert code != 0, f"{path}={value!r} was accepted"
    assert field in err, err


def test_backup_destination_must_match_its_type(cluster: LocalCluster, namespace: str) -> None:
    spec = _set(GOOD_BACKUP, "destination", {"type": "pvc"})
    code, err = _dry_run(cluster, _obj("CleoBackup", "bad", spec, namespace))
    assert code != 0
    assert "spec.destination" in err, err


BAD_FAILOVER_SPECS: list[tuple[str, Any, str]] = [
    ("type", "Panic", "spec.type"),
    ("rtoSeconds", -1, "spec.rtoSeconds"),
    ("maxLagBytes", -5, "spec.maxLagBytes"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_FAILOVER_SPECS)
def test_invalid_failover_specs_are_refused_naming_the_field(
    cluster: LocalCluster, namespace: str, path: str, value: Any, field: str
) -> None:
    obj = _obj("CleoFailover", "bad", _set(GOOD_FAILOVER, path, value), namespace)
    code, err = _dry_run(cluster, obj)
    assert code != 0, f"{path}={value!r} was accepted"
    assert field in err, err


def test_failover_spec_is_immutable(cluster: LocalCluster, namespace: str) -> None:
    spec = _drop(GOOD_FAILOVER, "dryRun") | {"dryRun": True}
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps(_obj("CleoFailover", "once", spec, namespace))
    )
    changed = _obj("CleoFailover", "once", {**spec, "rtoSeconds": 5}, namespace)
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(changed), check=False)
    assert result.returncode != 0
    assert "spec" in result.stderr, result.stderr


def _rendered_and_stored_hpa(
    cluster: LocalCluster, namespace: str, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HPA the operator renders from tenant spec `body` (which the CRD must take), and
    that HPA as the API server would store it (a dry-run create)."""
    code, err = _dry_run(cluster, _obj("CleoTenant", "scaling", body, None))
    assert code == 0, err
    hpa = render_hpa(
        tenant="scaling",
        namespace=namespace,
        owner=tenant_owner(name="scaling", uid="0b6f3c2e-5d1a-4c1e-9a57-3f1d2b8c9e10"),
        spec=parse_tenant_spec(body),
    )
    assert hpa is not None
    hpa["metadata"].pop("ownerReferences")  # its owner does not exist here
    desired = with_hash(hpa)
    result = cluster.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-",
        input=json.dumps(desired), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return desired, json.loads(result.stdout)


def test_every_metric_source_and_a_full_behavior_reach_the_hpa_as_written(
    cluster: LocalCluster, namespace: str
) -> None:
    body = autoscaling(metrics=EVERY_SOURCE, behavior=FULL_BEHAVIOR)
    # What the operator renders from it, the API server takes as an autoscaling/v2 HPA
    # (same JSON names) and keeps every metric and rule of it.
    _, stored_hpa = _rendered_and_stored_hpa(cluster, namespace, body)
    stored = stored_hpa["spec"]
    # (Quantities come back as strings: 30 is "30".)
    assert [m["type"] for m in stored["metrics"]] == [m["type"] for m in EVERY_SOURCE]
    assert stored["metrics"][:4] == EVERY_SOURCE[:4]
    assert stored["metrics"][4]["external"]["target"] == {
        "type": "AverageValue",
        "averageValue": "30",
    }
    assert stored["behavior"]["scaleDown"]["policies"] == FULL_BEHAVIOR["scaleDown"]["policies"]


@pytest.mark.parametrize(
    ("body", "field"),
    [(body, field) for body, field, _ in AUTOSCALING_TYPOS],
    ids=[f"{f}:{m}"[-70:] for _, f, m in AUTOSCALING_TYPOS],
)
def test_autoscaling_typos_are_refused_at_apply_naming_the_field(
    cluster: LocalCluster, crds_installed: None, body: dict[str, Any], field: str
) -> None:
    del crds_installed
    code, err = _dry_run(cluster, _obj("CleoTenant", "typo", body, None))
    assert code != 0, f"{field} was accepted"
    assert field in err, err


# Specs the CRD takes whose HPA the API server stores in another form than rendered: what it
# drops (empty selector lists and maps) or rewrites (quantities into their canonical form).
STORED_OTHERWISE = {
    "values-empty-on-exists": external_selector(
        {"matchExpressions": [{"key": "paused", "operator": "Exists", "values": []}]}
    ),
    "empty-match-labels": external_selector({"matchLabels": {}}),
    "empty-match-expressions": external_selector({"matchExpressions": []}),
    "empty-both": external_selector({"matchLabels": {}, "matchExpressions": []}),
    "exponent": pods_metric(type="AverageValue", averageValue="1e3"),
    "nano": pods_metric(type="AverageValue", averageValue="1500n"),
    "binary": pods_metric(type="AverageValue", averageValue="1.5Gi"),
    "largest": pods_metric(type="AverageValue", averageValue="7Ei"),
    "sub-nano": pods_metric(type="AverageValue", averageValue="1.5n"),
    "far-below-nano": pods_metric(type="AverageValue", averageValue="1e-30"),
    "binary-over-int64": pods_metric(type="AverageValue", averageValue="8Ei"),
    "decimal-over-int64": pods_metric(type="AverageValue", averageValue="1e19"),
    "huge": pods_metric(type="AverageValue", averageValue="1e300"),
}


@pytest.mark.parametrize("metric", STORED_OTHERWISE.values(), ids=STORED_OTHERWISE.keys())
def test_rendered_hpa_is_contained_in_what_the_api_server_returns(
    cluster: LocalCluster, namespace: str, metric: dict[str, Any]
) -> None:
    # Otherwise every reconcile applies the HPA again and warns of a drift that is none.
    desired, stored = _rendered_and_stored_hpa(cluster, namespace, autoscaling(metrics=[metric]))
    assert not needs_apply(desired, stored), stored["spec"]["metrics"]
