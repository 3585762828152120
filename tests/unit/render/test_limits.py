"""ResourceQuota and LimitRange: what the spec limits is limited, nothing else."""

from __future__ import annotations

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.limits import render_limit_range, render_resource_quota
from cleo_operator.render.meta import tenant_owner
from tests.unit.render.specs import TENANT, UID, spec_of

NS = "acme-prod"
OWNER = tenant_owner(name=TENANT, uid=UID)


def quota(spec: CleoTenantSpec) -> KubeObject | None:
    return render_resource_quota(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec)


def limit_range(spec: CleoTenantSpec) -> KubeObject | None:
    return render_limit_range(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec)


def test_every_quota_field_becomes_a_hard_limit_as_a_string() -> None:
    rendered = quota(spec_of())
    assert rendered is not None
    assert rendered["apiVersion"] == "v1"
    assert rendered["kind"] == "ResourceQuota"
    assert rendered["metadata"]["namespace"] == NS
    assert rendered["spec"] == {
        "hard": {
            "count/cleobackups.cleoai.io": "20",
            "count/configmaps": "50",
            "count/persistentvolumeclaims": "5",
            "count/secrets": "50",
            "count/services": "10",
            "pods": "40",
            "requests.cpu": "8",
            "requests.memory": "16Gi",
            "requests.storage": "100Gi",
        }
    }


def test_a_partial_quota_limits_only_what_it_names() -> None:
    rendered = quota(spec_of(quota={"memory": "4Gi", "pods": 0}))
    assert rendered is not None
    # Zero pods is a limit (a frozen tenant), not an unset field.
    assert rendered["spec"]["hard"] == {
        "count/cleobackups.cleoai.io": "20",
        "pods": "0",
        "requests.memory": "4Gi",
    }
    # Limits are not capped: that would refuse every pod that sets no limits.
    assert not any(key.startswith("limits.") for key in rendered["spec"]["hard"])


def test_no_quota_object_without_a_quota() -> None:
    assert quota(spec_of(quota=None)) is None


@pytest.mark.security
def test_a_quota_always_caps_the_backups_tenant_admins_may_ask_for() -> None:
    # Tenant admins may create CleoBackups (one-offs): without a cap they could start as
    # many backup pods against the shared database and storage as they like.
    empty = quota(spec_of(quota={}))
    assert empty is not None
    assert empty["spec"] == {"hard": {"count/cleobackups.cleoai.io": "20"}}
    chosen = quota(spec_of(quota={"backups": 5}))
    assert chosen is not None
    assert chosen["spec"]["hard"] == {"count/cleobackups.cleoai.io": "5"}


def test_limit_range_defaults_requests_and_maximums_per_container() -> None:
    rendered = limit_range(spec_of())
    assert rendered is not None
    assert rendered["kind"] == "LimitRange"
    assert rendered["spec"] == {
        "limits": [
            {
                "type": "Container",
                "default": {"cpu": "1", "memory": "1Gi"},
                "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
                "max": {"cpu": "4", "memory": "8Gi"},
            }
        ]
    }


def test_limit_range_leaves_out_what_is_unset() -> None:
    rendered = limit_range(spec_of(limits={"maxMemory": "2Gi"}))
    assert rendered is not None
    assert rendered["spec"]["limits"] == [{"type": "Container", "max": {"memory": "2Gi"}}]
    assert limit_range(spec_of(limits=None)) is None
    assert limit_range(spec_of(limits={})) is None
