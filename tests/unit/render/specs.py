"""Tenant specs for the render tests, written as users write them (camelCase JSON)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.render.tenant import render_tenant
from tests.harness.specs import IMAGE, tenant_spec

TENANT = "acme"
UID = "0b6f3c2e-5d1a-4c1e-9a57-3f1d2b8c9e10"
CHECKSUM = "a" * 64

FULL: dict[str, Any] = tenant_spec()
"""A tenant that uses every field render reads."""

WORKLOAD: dict[str, Any] = {"image": IMAGE}
"""The smallest workload."""


def spec_of(raw: dict[str, Any] | None = None, **changes: Any) -> CleoTenantSpec:
    """Parse `raw` (default: `FULL`) with top-level `changes` applied; None removes a key."""
    body = copy.deepcopy(FULL if raw is None else raw)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return parse_tenant_spec(body)


def render(spec: CleoTenantSpec, **kwargs: Any) -> list[KubeObject]:
    """`render_tenant` of tenant `TENANT` with the test uid and checksum."""
    options: dict[str, Any] = {"config_checksum": CHECKSUM, **kwargs}
    return render_tenant(name=TENANT, uid=UID, spec=spec, **options)


def find(objects: list[KubeObject], kind: str, name: str | None = None) -> list[KubeObject]:
    """The objects of `kind` (and `name`, when given)."""
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


# --- hypothesis: specs users could write -----------------------------------------------------

_label_keys = st.sampled_from(
    ["app", "tier", "team", "example.com/role", "kubernetes.io/metadata.name", "cleoai.io/tenant"]
)
_label_values = st.sampled_from(["", "web", "gateway", "ingress-nginx", "acme", "other", "a.b-c"])
labels = st.dictionaries(_label_keys, _label_values, max_size=3)


@st.composite
def ingress_peers(draw: st.DrawFn) -> dict[str, Any]:
    """An ingressFrom entry: a namespaceSelector, a podSelector or both."""
    which = draw(st.sampled_from(["namespace", "pod", "both"]))
    peer: dict[str, Any] = {}
    if which in ("namespace", "both"):
        peer["namespaceSelector"] = draw(labels)
    if which in ("pod", "both"):
        peer["podSelector"] = draw(labels)
    return peer


_cidrs = st.sampled_from(
    ["10.20.0.0/16", "10.20.3.4/16", "192.168.1.0/24", "172.16.0.9/32", "fd00::/64", "fd00::1/64"]
)
database_egress = st.lists(
    st.fixed_dictionaries(
        {
            "cidr": _cidrs,
            "ports": st.lists(
                st.sampled_from([5432, 6432, 15432]), min_size=1, max_size=3, unique=True
            ),
        }
    ),
    max_size=4,
)
_quantities = st.one_of(
    st.integers(min_value=1, max_value=64), st.sampled_from(["250m", "1.5", "2Gi", "512Mi"])
)
_env_names = st.sampled_from(["LOG_LEVEL", "A", "B", "CLEO_MODE", "_X"])
envs = st.lists(
    st.fixed_dictionaries({"name": _env_names, "value": st.text(max_size=8)}),
    max_size=4,
    unique_by=lambda e: e["name"],
)


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    """A spec.workload with any of its optional fields."""
    workload: dict[str, Any] = {
        "image": draw(st.sampled_from(["cleoai:1", "r.example.com/c@sha256:" + "0" * 64]))
    }
    if draw(st.booleans()):
        workload["port"] = draw(st.integers(min_value=1, max_value=65535))
    if draw(st.booleans()):
        workload["imagePullPolicy"] = draw(st.sampled_from(["Always", "IfNotPresent", "Never"]))
    if draw(st.booleans()):
        workload["replicas"] = draw(st.integers(min_value=0, max_value=20))
    if draw(st.booleans()):
        workload["env"] = draw(envs)
    if draw(st.booleans()):
        workload["config"] = draw(
            st.dictionaries(
                st.sampled_from(["a", "b.yaml", "c-d", "E_F"]), st.text(max_size=5), max_size=3
            )
        )
    if draw(st.booleans()):
        workload["resources"] = {
            part: draw(
                st.fixed_dictionaries({}, optional={"cpu": _quantities, "memory": _quantities})
            )
            for part in draw(st.sets(st.sampled_from(["requests", "limits"])))
        }
    return workload


@st.composite
def tenant_specs(draw: st.DrawFn) -> CleoTenantSpec:
    """A whole CleoTenant spec, any optional part present or not."""
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["workload"] = draw(workloads())
    if draw(st.booleans()):
        minimum = draw(st.integers(min_value=1, max_value=5))
        body["autoscaling"] = {
            "enabled": draw(st.booleans()),
            "minReplicas": minimum,
            "maxReplicas": draw(st.integers(min_value=minimum, max_value=10)),
            **draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "targetCPUUtilizationPercentage": st.integers(1, 100),
                        "targetMemoryUtilizationPercentage": st.integers(1, 100),
                    },
                )
            ),
        }
    body["network"] = {
        "ingressFrom": draw(st.lists(ingress_peers(), max_size=4)),
        "databaseEgress": draw(database_egress),
    }
    subjects = st.lists(
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["User", "Group"]), "name": st.sampled_from(["a", "b", "ops"])}
        ),
        max_size=3,
        unique_by=lambda s: (s["kind"], s["name"]),
    )
    body["admins"] = draw(subjects)
    body["viewers"] = draw(subjects)
    if draw(st.booleans()):
        body["podDisruptionBudget"] = {"minAvailable": draw(st.sampled_from([0, 1, 2, "50%"]))}
    if draw(st.booleans()):
        body["quota"] = draw(
            st.fixed_dictionaries({}, optional={"cpu": _quantities, "pods": st.integers(0, 50)})
        )
    return parse_tenant_spec(body)
