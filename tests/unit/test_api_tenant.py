"""The CleoTenant model: a complete spec is accepted as written, bad ones name the field."""

from __future__ import annotations

import types
from typing import Any

import pytest

from cleo_operator.api import tenant
from cleo_operator.api.base import SpecError
from cleo_operator.api.tenant import (
    DEFAULT_TARGET_CPU_UTILIZATION_PERCENTAGE,
    CleoTenantSpec,
    CleoTenantStatus,
    parse_tenant_spec,
    validate_tenant_spec_update,
)
from tests.harness.specs import tenant_spec, with_value
from tests.unit.api_support import assert_refused_naming

GOOD: dict[str, Any] = tenant_spec()


def test_a_complete_spec_is_accepted_and_dumps_back_as_written() -> None:
    spec = parse_tenant_spec(GOOD)
    assert spec.namespace == "acme-prod"
    assert spec.autoscaling.target_cpu_utilization_percentage == 70
    assert spec.workload is not None
    assert spec.workload.env[0].name == "LOG_LEVEL"
    assert spec.to_api() == GOOD


def test_a_kopf_style_read_only_mapping_is_accepted() -> None:
    def frozen(value: Any) -> Any:
        if isinstance(value, dict):
            return types.MappingProxyType({k: frozen(v) for k, v in value.items()})
        return value

    assert parse_tenant_spec(frozen(GOOD)) == parse_tenant_spec(GOOD)


def test_an_empty_spec_gets_the_documented_defaults() -> None:
    spec = parse_tenant_spec({})
    assert spec.namespace is None
    assert spec.paused is False
    assert spec.deletion_policy == "Retain"
    assert spec.workload is None
    assert spec.autoscaling.enabled is True
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 5)
    assert spec.database.enabled is False
    assert spec.database.site == "default"
    assert spec.database.connection_limit == 20
    assert spec.encryption.rotation_period is None
    assert spec.failover.automatic is False
    assert spec.failover.failover_delay == "60s"
    # Defaults of whole sub-objects stay out of the dump, as out of the stored object.
    assert spec.to_api()["deletionPolicy"] == "Retain"


def test_a_missing_spec_is_an_error_not_a_crash() -> None:
    with pytest.raises(SpecError, match=r"^spec: is required$"):
        parse_tenant_spec(None)


def test_snake_case_is_not_the_api() -> None:
    with pytest.raises(SpecError) as caught:
        parse_tenant_spec({"deletion_policy": "Delete"})
    assert str(caught.value) == (
        "spec.deletion_policy: is not a field of this API; "
        "check the spelling (fields are camelCase)"
    )


def test_the_spec_is_frozen() -> None:
    spec = parse_tenant_spec(GOOD)
    with pytest.raises(ValueError, match="frozen"):
        spec.paused = True  # type: ignore[misc]


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the value at a dotted path (list indexes as numbers) replaced or added."""
    return with_value(GOOD, path, value)


BAD = [
    ("deletionPolicy", "Keep", "spec.deletionPolicy", "'Retain' or 'Delete'"),
    ("namespace", "Acme", "spec.namespace", "DNS label"),
    ("namespace", "kube-system", "spec.namespace", "namespace of Kubernetes itself"),
    ("namespace", "default", "spec.namespace", "namespace of Kubernetes itself"),
    ("namespace", "kube-flannel", "spec.namespace", "namespace of Kubernetes itself"),
    ("namespace", "svc", "spec.namespace", "zone of the cluster's DNS"),
    ("admins.0.kind", "Robot", "spec.admins[0].kind", "'User' or 'Group'"),
    ("admins.1", {"kind": "User", "name": "alice@example.com"}, "spec.admins[1].name", "duplicate"),
    ("quota.cpu", "8 cores", "spec.quota.cpu", "Kubernetes quantity"),
    ("quota.memory", 1.5, "spec.quota.memory", "Kubernetes quantity"),
    ("quota.pods", -1, "spec.quota.pods", "greater than or equal to 0"),
    ("limits.maxCpu", "lots", "spec.limits.maxCpu", "Kubernetes quantity"),
    ("network.ingressFrom.0", {}, "spec.network.ingressFrom[0]", "namespaceSelector, podSelector"),
    (
        "network.ingressFrom.1",
        {"podSelector": {"bad key!": "x"}},
        "spec.network.ingressFrom[1].podSelector[bad key!]",
        "label keys",
    ),
    (
        "network.ingressFrom.1",
        {"podSelector": {"app": "-x"}},
        "spec.network.ingressFrom[1].podSelector.app",
        "label value",
    ),
    (
        "network.databaseEgress.0.cidr",
        "10.20.0.0/33",
        "spec.network.databaseEgress[0].cidr",
        "CIDR",
    ),
    (
        "network.databaseEgress.0.ports",
        [5432, 5432],
        "spec.network.databaseEgress[0].ports[1]",
        "duplicate",
    ),
    (
        "network.databaseEgress.0.ports",
        [0],
        "spec.network.databaseEgress[0].ports[0]",
        "greater than or equal to 1",
    ),
    ("network.databaseEgress.0.ports", [], "spec.network.databaseEgress[0].ports", "at least 1"),
    ("workload.image", "my image", "spec.workload.image", "without spaces"),
    ("workload.port", 70000, "spec.workload.port", "less than or equal to 65535"),
    ("workload.env.0.name", "LOG-LEVEL", "spec.workload.env[0].name", "C identifier"),
    ("workload.env.1.name", "LOG_LEVEL", "spec.workload.env[1].name", "duplicate entry"),
    ("workload.config", {"a/b": "x"}, "spec.workload.config[a/b]", "invalid key"),
    ("workload.imagePullPolicy", "Sometimes", "spec.workload.imagePullPolicy", "'IfNotPresent'"),
    ("workload.resources.requests.gpu", 1, "spec.workload.resources.requests.gpu", "not a field"),
    ("autoscaling.minReplicas", 11, "spec.autoscaling.maxReplicas", "must be >= minReplicas (11)"),
    ("autoscaling.minReplicas", 0, "spec.autoscaling.minReplicas", "greater than or equal to 1"),
    (
        "autoscaling.targetCPUUtilizationPercentage",
        101,
        "spec.autoscaling.targetCPUUtilizationPercentage",
        "less than or equal to 100",
    ),
    ("autoscaling.metrics.0", {"pods": {}}, "spec.autoscaling.metrics[0].type", "is required"),
    (
        "podDisruptionBudget.minAvailable",
        "half",
        "spec.podDisruptionBudget.minAvailable",
        "percentage",
    ),
    ("secrets.0.name", "cleo-keyring", "spec.secrets[0].name", "must not start with 'cleo-'"),
    ("secrets.0.name", "Open_AI", "spec.secrets[0].name", "DNS label"),
    ("secrets.0.data", {}, "spec.secrets[0].data", "at least 1"),
    ("secrets.0.data", {"api key": "x"}, "spec.secrets[0].data[api key]", "invalid key"),
    ("encryption.rotationPeriod", "0d", "spec.encryption.rotationPeriod", "longer than zero"),
    ("encryption.rotationPeriod", "3 months", "spec.encryption.rotationPeriod", "duration"),
    (
        "database.connectionLimit",
        -2,
        "spec.database.connectionLimit",
        "greater than or equal to -1",
    ),
    ("database.site", "EU", "spec.database.site", "DNS label"),
    ("database.passwordRotationPeriod", "1w", "spec.database.passwordRotationPeriod", "duration"),
    (
        "failover.standbySite",
        "eu-west",
        "spec.failover.standbySite",
        "must differ from spec.database.site",
    ),
    ("failover.failoverDelay", "", "spec.failover.failoverDelay", "duration"),
    ("database.enabled", False, "spec.failover.automatic", "needs spec.database.enabled"),
    ("database.enabled", False, "spec.database.pooler.enabled", "needs spec.database.enabled"),
    (
        "database.pooler.poolSize",
        30,
        "spec.database.pooler.poolSize",
        "must not exceed spec.database.connectionLimit (50)",
    ),
    ("database.pooler.mode", "statement", "spec.database.pooler.mode", "'transaction'"),
    ("database.pooler.replicas", 0, "spec.database.pooler.replicas", "greater than or equal"),
    ("paused", "yes please", "spec.paused", "valid boolean"),
    ("extra", 1, "spec.extra", "not a field of this API"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"), BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD]
)
def test_a_bad_spec_is_refused_naming_the_field(
    path: str, value: Any, field: str, message: str
) -> None:
    assert_refused_naming(parse_tenant_spec, with_(path, value), field, message)


def test_automatic_failover_needs_a_standby_site() -> None:
    spec = with_("failover", {"automatic": True})
    with pytest.raises(SpecError, match=r"^spec\.failover\.standbySite: is required when"):
        parse_tenant_spec(spec)


def test_the_default_site_counts_when_no_database_block_is_given() -> None:
    spec = {"failover": {"standbySite": "default"}}
    with pytest.raises(SpecError, match=r"spec\.failover\.standbySite: must differ"):
        parse_tenant_spec(spec)


def test_several_problems_are_reported_together() -> None:
    spec = with_("quota.cpu", "x")
    spec["workload"]["port"] = 0
    with pytest.raises(SpecError) as caught:
        parse_tenant_spec(spec)
    assert [i.path for i in caught.value.issues] == ["spec.quota.cpu", "spec.workload.port"]


def test_sealed_values_never_appear_in_errors() -> None:
    sealed = "v1.VERY-SECRET-SEALED-BYTES"
    spec = with_("secrets.0.data", {"bad key": sealed})
    spec["workload"]["env"][0]["value"] = 12345  # a wrong type next to secret material
    with pytest.raises(SpecError) as caught:
        parse_tenant_spec(spec)
    assert sealed not in str(caught.value)
    assert "12345" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_namespace_cannot_change_once_the_tenant_exists() -> None:
    old = parse_tenant_spec(GOOD)
    validate_tenant_spec_update(old, parse_tenant_spec(with_("paused", True)))
    for new in (
        {**GOOD, "namespace": "elsewhere"},
        {k: v for k, v in GOOD.items() if k != "namespace"},
    ):
        with pytest.raises(SpecError, match=r"^spec\.namespace: is fixed"):
            validate_tenant_spec_update(old, parse_tenant_spec(new))


@pytest.mark.parametrize(
    ("autoscaling", "target"),
    [
        ({}, DEFAULT_TARGET_CPU_UTILIZATION_PERCENTAGE),
        ({"targetCPUUtilizationPercentage": 60}, 60),
        ({"targetMemoryUtilizationPercentage": 60}, None),
        (
            {
                "metrics": [
                    {
                        "type": "External",
                        "external": {
                            "metric": {"name": "queue_depth"},
                            "target": {"type": "Value", "value": 30},
                        },
                    }
                ]
            },
            None,
        ),
    ],
)
def test_effective_cpu_target(autoscaling: dict[str, Any], target: int | None) -> None:
    spec = CleoTenantSpec.model_validate({"autoscaling": autoscaling})
    assert spec.autoscaling.effective_cpu_target() == target


def test_status_reads_back_what_the_operator_wrote_and_ignores_foreign_keys() -> None:
    written = {
        "observedGeneration": 3,
        "phase": "Ready",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "every part of the tenant works",
                "observedGeneration": 3,
                "lastTransitionTime": "2024-05-01T12:00:00Z",
            }
        ],
        "namespace": "acme-prod",
        "children": [
            {"apiVersion": "v1", "kind": "Namespace", "namespace": "", "name": "acme-prod"}
        ],
        "replicas": {"desired": 2, "ready": 2, "available": 2},
        "keyVersion": 4,
        "lastRotation": "2024-04-01T00:00:00Z",
        "nextRotation": "2024-06-30T00:00:00Z",
        "secrets": [{"name": "openai", "ready": True}],
        "database": {
            "site": "eu-west",
            "name": "cleo_acme",
            "user": "cleo_acme",
            "secretName": "cleo-database",
            "lastPasswordRotation": "2024-04-15T00:00:00Z",
        },
        "orphaned": False,
    }
    status = CleoTenantStatus.model_validate({**written, "kopf": {"progress": {}}})
    assert status.to_api() == written


def test_the_kind_is_described_once() -> None:
    assert tenant.RESOURCE.kind == tenant.KIND == "CleoTenant"
    assert tenant.RESOURCE.plural == tenant.PLURAL == "cleotenants"
    assert tenant.RESOURCE.short_names == tenant.SHORT_NAMES == ("ct", "cleotenant")
    assert tenant.RESOURCE.scope == "Cluster"
    assert tenant.RESOURCE.api_version == "cleoai.io/v1alpha1"
    tenant.RESOURCE.validate_name("acme")
    with pytest.raises(SpecError, match="at most 40"):
        tenant.RESOURCE.validate_name("a" * 41)


def test_cross_field_rules_are_reported_together() -> None:
    spec = {
        "namespace": "default",
        "failover": {"automatic": True, "standbySite": "default"},
    }
    with pytest.raises(SpecError) as caught:
        parse_tenant_spec(spec)
    assert [i.path for i in caught.value.issues] == [
        "spec.namespace",
        "spec.failover.standbySite",
        "spec.failover.automatic",
    ]
