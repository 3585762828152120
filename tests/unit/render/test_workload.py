"""The CleoAI ConfigMap, Deployment and Service, and the checksum that rolls the pods."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.workload import (
    config_checksum,
    render_config_map,
    render_deployment,
    render_service,
)
from tests.unit.render.pod_security import restricted_violations
from tests.unit.render.specs import CHECKSUM, FULL, TENANT, UID, WORKLOAD, spec_of, tenant_specs

NS = "acme-prod"
OWNER = tenant_owner(name=TENANT, uid=UID)


def deployment(spec: CleoTenantSpec, **kwargs: Any) -> KubeObject:
    options: dict[str, Any] = {"config_checksum": CHECKSUM, **kwargs}
    rendered = render_deployment(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec, **options)
    assert rendered is not None
    return rendered


def container(spec: CleoTenantSpec, **kwargs: Any) -> dict[str, Any]:
    containers = deployment(spec, **kwargs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def autoscaling(enabled: bool) -> dict[str, Any]:
    return {**FULL["autoscaling"], "enabled": enabled}


# --- Pod Security `restricted` ----------------------------------------------------------------


def test_the_pods_pass_the_restricted_profile() -> None:
    pod = deployment(spec_of())["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []


@settings(max_examples=100, deadline=None)
@given(spec=tenant_specs())
def test_every_rendered_pod_passes_the_restricted_profile(spec: CleoTenantSpec) -> None:
    rendered = render_deployment(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        spec=spec,
        config_checksum=CHECKSUM,
        secret_names=["openai"],
        database_secret="cleo-database",
    )
    assert (rendered is None) == (spec.workload is None)
    if rendered is not None:
        assert restricted_violations(rendered["spec"]["template"]["spec"]) == []


def _pod_sc(pod: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod["securityContext"]
    return result


def _container_sc(pod: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod["containers"][0]["securityContext"]
    return result


BREAKAGES: dict[str, Callable[[dict[str, Any]], object]] = {
    "root user": lambda pod: _pod_sc(pod).update(runAsUser=0),
    "runAsNonRoot unset": lambda pod: (
        _pod_sc(pod).pop("runAsNonRoot"),
        _container_sc(pod).pop("runAsNonRoot"),
    ),
    "escalation": lambda pod: _container_sc(pod).pop("allowPrivilegeEscalation"),
    "capabilities kept": lambda pod: _container_sc(pod).update(capabilities={}),
    "capability added": lambda pod: _container_sc(pod)["capabilities"].update(add=["NET_ADMIN"]),
    "no seccomp": lambda pod: _pod_sc(pod).pop("seccompProfile"),
    "hostPath": lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "host network": lambda pod: pod.update(hostNetwork=True),
    "privileged": lambda pod: _container_sc(pod).update(privileged=True),
    "host port": lambda pod: pod["containers"][0]["ports"][0].update(hostPort=8080),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_checker_is_not_a_rubber_stamp(breakage: str) -> None:
    pod = copy.deepcopy(deployment(spec_of())["spec"]["template"]["spec"])
    BREAKAGES[breakage](pod)
    assert restricted_violations(pod) != []


def test_the_root_filesystem_is_read_only_with_a_writable_tmp() -> None:
    pod = deployment(spec_of())["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 10001


def test_the_pods_use_the_tenant_service_account_without_a_token() -> None:
    pod = deployment(spec_of())["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cleoai"
    assert pod["automountServiceAccountToken"] is False


# --- replicas, selector, rollout ----------------------------------------------------------


def test_replicas_are_left_to_the_hpa_when_autoscaling() -> None:
    assert "replicas" not in deployment(spec_of(autoscaling=autoscaling(True)))["spec"]


def test_replicas_come_from_the_spec_when_not_autoscaling() -> None:
    assert deployment(spec_of(autoscaling=autoscaling(False)))["spec"]["replicas"] == 2
    no_count = spec_of({"workload": WORKLOAD, "autoscaling": {"enabled": False}})
    assert deployment(no_count)["spec"]["replicas"] == 1
    scaled_to_zero = spec_of(
        {"workload": {**WORKLOAD, "replicas": 0}, "autoscaling": {"enabled": False}}
    )
    assert deployment(scaled_to_zero)["spec"]["replicas"] == 0


def test_the_selector_never_changes_with_the_spec() -> None:
    selector = {"matchLabels": {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT}}
    changed_workload = {**FULL["workload"], "image": "cleoai:2", "port": 9000, "env": []}
    for spec in (spec_of(), spec_of({"workload": WORKLOAD}), spec_of(workload=changed_workload)):
        rendered = deployment(spec)
        assert rendered["spec"]["selector"] == selector
        pod_labels = rendered["spec"]["template"]["metadata"]["labels"]
        assert selector["matchLabels"].items() <= pod_labels.items()


def test_the_rollout_keeps_capacity_and_history() -> None:
    rendered = deployment(spec_of())["spec"]
    assert rendered["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert rendered["revisionHistoryLimit"] == 5


def test_the_checksum_goes_on_the_pod_template() -> None:
    template = deployment(spec_of(), config_checksum="b" * 64)["spec"]["template"]
    assert template["metadata"]["annotations"] == {"cleoai.io/config-checksum": "b" * 64}


# --- the container ------------------------------------------------------------------------------


def test_the_container_runs_the_image_on_its_port_with_probes() -> None:
    rendered = container(spec_of())
    assert rendered["image"] == "registry.example.com/cleoai:1.4.2"
    assert rendered["imagePullPolicy"] == "IfNotPresent"
    assert rendered["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert rendered["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert rendered["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert rendered["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


def test_a_minimal_workload_leaves_optional_fields_out() -> None:
    rendered = container(spec_of({"workload": WORKLOAD}))
    for key in ("imagePullPolicy", "env", "envFrom", "resources"):
        assert key not in rendered
    assert rendered["ports"][0]["containerPort"] == 8080
    empty_parts = {**WORKLOAD, "resources": {"requests": {}, "limits": {"cpu": "1"}}}
    assert container(spec_of({"workload": empty_parts}))["resources"] == {"limits": {"cpu": "1"}}


def test_env_keeps_the_spec_order_and_leaves_out_empty_values() -> None:
    env = [{"name": "B", "value": "1"}, {"name": "A", "value": "$(B)2"}, {"name": "EMPTY"}]
    rendered = container(spec_of({"workload": {**WORKLOAD, "env": env}}))
    # "" is what the API server drops, so sending it would look like drift forever.
    assert rendered["env"] == [
        {"name": "B", "value": "1"},
        {"name": "A", "value": "$(B)2"},
        {"name": "EMPTY"},
    ]


def test_env_from_config_then_secrets_then_the_database_secret() -> None:
    rendered = container(
        spec_of(),
        secret_names=["zeta", "openai", "cleo-database", "openai"],
        database_secret="cleo-database",
    )
    assert rendered["envFrom"] == [
        {"configMapRef": {"name": "cleoai-config"}},
        {"secretRef": {"name": "openai"}},
        {"secretRef": {"name": "zeta"}},
        {"secretRef": {"name": "cleo-database"}},
    ]
    without_config = spec_of(workload={**FULL["workload"], "config": {}})
    assert container(without_config, secret_names=["openai"])["envFrom"] == [
        {"secretRef": {"name": "openai"}}
    ]


def test_no_workload_renders_no_deployment_service_or_config() -> None:
    spec = spec_of(workload=None)
    for render in (render_config_map, render_service):
        assert render(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec) is None
    assert (
        render_deployment(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec, config_checksum="x")
        is None
    )


# --- ConfigMap and Service ------------------------------------------------------------------


def test_the_config_map_holds_the_config_sorted() -> None:
    config = {"z.yaml": "1", "a.json": "{}"}
    rendered = render_config_map(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        spec=spec_of(workload={**WORKLOAD, "config": config}),
    )
    assert rendered is not None
    assert rendered["metadata"]["name"] == "cleoai-config"
    assert list(rendered["data"].items()) == [("a.json", "{}"), ("z.yaml", "1")]
    no_config = spec_of(workload=WORKLOAD)
    assert render_config_map(tenant=TENANT, namespace=NS, owner=OWNER, spec=no_config) is None


def test_the_service_maps_port_80_to_the_workload_port() -> None:
    spec = spec_of(workload={**WORKLOAD, "port": 9000})
    rendered = render_service(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec)
    assert rendered is not None
    assert rendered["spec"] == {
        "type": "ClusterIP",
        "selector": {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT},
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9000}],
    }


# --- config_checksum ------------------------------------------------------------------------

FINGERPRINTS = {"openai": "fp-1", "cleo-database": "fp-2"}
CONFIG = {"cleo.yaml": "memory: postgres\n"}


def test_the_checksum_is_a_sha256_that_ignores_order() -> None:
    checksum = config_checksum(secret_fingerprints=FINGERPRINTS, config=CONFIG)
    assert len(checksum) == 64
    assert set(checksum) <= set("0123456789abcdef")
    reordered = dict(reversed(list(FINGERPRINTS.items())))
    assert config_checksum(secret_fingerprints=reordered, config=dict(CONFIG)) == checksum


@pytest.mark.parametrize(
    ("fingerprints", "config"),
    [
        ({**FINGERPRINTS, "openai": "fp-1b"}, CONFIG),  # a Secret's data changed
        ({"openai": "fp-1"}, CONFIG),  # a Secret went away
        ({**FINGERPRINTS, "extra": "fp-3"}, CONFIG),  # a Secret was added
        (FINGERPRINTS, {"cleo.yaml": "memory: redis\n"}),  # the config changed
        (FINGERPRINTS, {}),  # the config went away
        # The same strings moved between secrets and config are a different input.
        ({"openai": "fp-1"}, {**CONFIG, "cleo-database": "fp-2"}),
    ],
)
def test_the_checksum_changes_when_an_input_changes(
    fingerprints: dict[str, str], config: dict[str, str]
) -> None:
    before = config_checksum(secret_fingerprints=FINGERPRINTS, config=CONFIG)
    assert config_checksum(secret_fingerprints=fingerprints, config=config) != before


def test_the_checksum_does_not_contain_its_inputs() -> None:
    fingerprint = "0123456789abcdef0123456789abcdef"
    checksum = config_checksum(secret_fingerprints={"s": fingerprint}, config={})
    assert fingerprint not in checksum
    assert fingerprint not in json.dumps(
        deployment(spec_of(), config_checksum=checksum), sort_keys=True
    )
