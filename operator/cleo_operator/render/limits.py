"""The tenant's resource limits: a ResourceQuota for totals, a LimitRange per container.

Only what the spec sets is limited. A spec that sets nothing gets no object at all
(rather than an empty one), so "no quota" looks the same in the cluster as in the spec.
One default: a quota (``spec.quota``, even empty) always caps the namespace's CleoBackups
(``count/cleobackups.cleoai.io``, `DEFAULT_BACKUPS` unless ``spec.quota.backups`` says
otherwise). Tenant admins may create CleoBackups (one-offs that run one of the platform's,
see reconcile/backup_source.py), and each runs a pod that dumps the tenant's database from
a shared server into shared storage: a platform that bounds a tenant bounds that too. The
operator removes those one-offs a while after they ran, which frees the quota again. (A
tenant without a quota is bounded in nothing, its own pods included.)

``spec.quota.cpu`` and ``.memory`` cap the *requests* of all pods (``requests.cpu``,
``requests.memory``), as the fields document. They deliberately do not also cap
``limits.cpu``/``limits.memory``: a quota on limits makes the API server refuse every pod
that sets no limits, which is a stronger rule than the spec states.

Note for users (Kubernetes behaviour, not ours): once ``requests.cpu`` or
``requests.memory`` is capped, every pod in the namespace must request that resource, so
give the workload ``resources.requests`` or give ``spec.limits`` default requests.

Quantities are sent as strings: the API server stores and returns them as strings, so the
rendered object matches what a read returns.
"""

from __future__ import annotations

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.child import child_metadata
from cleo_operator.render.k8s import LimitRange, LimitRangeItem, ResourceQuota, as_object

RESOURCE_QUOTA_NAME = "cleo-quota"
LIMIT_RANGE_NAME = "cleo-limits"
BACKUPS_QUOTA_KEY = "count/cleobackups.cleoai.io"
DEFAULT_BACKUPS = 20
"""CleoBackups a tenant namespace may hold unless ``spec.quota.backups`` says otherwise:
room for the platform's few and about a day's worth of one-offs."""


def _quantities(**values: int | str | None) -> dict[str, str]:
    """The set values as quantity strings, keyed and sorted by resource name."""
    return {key: str(value) for key, value in sorted(values.items()) if value is not None}


def render_resource_quota(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The ResourceQuota of spec.quota (with its cap on CleoBackups); None without one."""
    quota = spec.quota
    if quota is None:
        return None
    hard = _quantities(
        **{
            "requests.cpu": quota.cpu,
            "requests.memory": quota.memory,
            "requests.storage": quota.storage,
            "pods": quota.pods,
            "count/services": quota.services,
            "count/secrets": quota.secrets,
            "count/configmaps": quota.config_maps,
            "count/persistentvolumeclaims": quota.persistent_volume_claims,
            BACKUPS_QUOTA_KEY: quota.backups or DEFAULT_BACKUPS,
        }
    )
    obj: ResourceQuota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": child_metadata(
            name=RESOURCE_QUOTA_NAME,
            namespace=namespace,
            tenant=tenant,
            owner=owner,
            component="limits",
        ),
        "spec": {"hard": hard},
    }
    return as_object(obj)


def render_limit_range(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The LimitRange of spec.limits (per-container defaults and maximums); None when unset."""
    limits = spec.limits
    if limits is None:
        return None
    item: LimitRangeItem = {"type": "Container"}
    default = _quantities(cpu=limits.default_cpu, memory=limits.default_memory)
    default_request = _quantities(
        cpu=limits.default_request_cpu, memory=limits.default_request_memory
    )
    maximum = _quantities(cpu=limits.max_cpu, memory=limits.max_memory)
    # Empty maps are left out: the API server drops them, and a sent key it drops would
    # look like drift to the kube layer on every reconcile.
    if default:
        item["default"] = default
    if default_request:
        item["defaultRequest"] = default_request
    if maximum:
        item["max"] = maximum
    if len(item) == 1:
        return None
    obj: LimitRange = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": child_metadata(
            name=LIMIT_RANGE_NAME,
            namespace=namespace,
            tenant=tenant,
            owner=owner,
            component="limits",
        ),
        "spec": {"limits": [item]},
    }
    return as_object(obj)
