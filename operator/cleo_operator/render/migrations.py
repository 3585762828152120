"""The migration Job of a tenant's workload, and the NetworkPolicy its pods get.

Choices, and why:

- **What a migration is.** `migration_key` hashes what runs: the image, the command and
  its arguments. The same key means the same migration, so it never runs twice for one
  spec; a new image or a new command is a new key, and a new Job ``cleo-migrate-<hash>``
  (``cleo-`` names are the operator's: the admission policy refuses them to tenants).
- **What it holds.** The workload's image, the workload's ConfigMap and the database
  Secret as environment (the Secret last, as for the Deployment, so that its
  ``DATABASE_URL`` wins: that Secret's URL goes straight to the site, never through a
  pooler, because a pooler in transaction mode breaks the session state a migration
  tool relies on, such as advisory locks and ``SET``), the site's CA, and nothing more:
  not the tenant's sealed secrets nor its keyring, which a schema change does not need.
- **How it runs.** The workload's restricted pod security and its ServiceAccount without
  a token; ``restartPolicy: Never``, the spec's ``backoffLimit``, ``activeDeadlineSeconds``
  from its ``timeout``; ``terminationMessagePolicy: FallbackToLogsOnError``, so that the
  kubelet puts the last lines of a failed container's log into its termination message
  and the operator reads why it failed without the right to read pods' logs.
- **Which pods are its own.** ``manualSelector`` with labels only the operator and the
  Kubernetes controllers may put on pods (the admission policy refuses
  ``app.kubernetes.io/managed-by=cleo-operator`` to everyone else): the Job controller
  adopts any pod its selector matches, and with the generated selector (the Job's uid
  label) a tenant admin's pod wearing that label and ending with 0 would complete it.
- **Its network.** `render_migration_policy` opens egress to the cluster DNS and the
  database ranges (``spec.network.databaseEgress``) for the migration pods, and the
  namespace's same-namespace policy leaves them out (`render.network`): a migration talks
  to its database and to nothing else in the namespace.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from cleo_operator.api.base import parse_duration
from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec, WorkloadSpec
from cleo_operator.render.child import (
    CONFIG_MAP_NAME,
    DATABASE_CA_VOLUME,
    WORKLOAD_NAME,
    database_ca_mount,
    database_ca_source,
    restricted_pod_security,
    sorted_map,
)
from cleo_operator.render.meta import tenant_labels
from cleo_operator.render.network import (
    DNS_NAMESPACE,
    DNS_POD_LABELS,
    DNS_PORT,
    MIGRATION_POD_LABEL,
    NAMESPACE_NAME_LABEL,
    database_egress_rules,
)

__all__ = [
    "JOB_PREFIX",
    "KEY_ANNOTATION",
    "MIGRATION_CONTAINER",
    "MIGRATION_LABEL",
    "MIGRATION_POLICY",
    "NONCE_ANNOTATION",
    "migration_job_name",
    "migration_key",
    "migration_pod_labels",
    "pinned_image",
    "render_migration_job",
    "render_migration_policy",
]

JOB_PREFIX: Final = "cleo-migrate-"
MIGRATION_LABEL: Final = MIGRATION_POD_LABEL
"""On the migration Job and its pods: the short hash of the migration's key."""
KEY_ANNOTATION: Final = "cleoai.io/migration-key"
IMAGE_ANNOTATION: Final = "cleoai.io/migration-image"
NONCE_ANNOTATION: Final = "cleoai.io/migration-nonce"
"""On the Job and the one-off backups of an attempt: the random value its status recorded
before they were made (`reconcile.migrations` adopts only an exact match)."""
MIGRATION_CONTAINER: Final = "migrate"
MIGRATION_POLICY: Final = "cleo-allow-migration"
COMPONENT: Final = "migration"
SHORT_HASH: Final = 10
RUN_AS_ID: Final = 10001
"""CleoAI's user and group (the workload's, `render.workload.RUN_AS_ID`)."""
TMP_VOLUME: Final = "tmp"
_DIGEST: Final = re.compile(r"@(sha256:[0-9a-f]{64})$")


def migration_key(workload: WorkloadSpec) -> str:
    """The sha256 (hex) of what the migration runs: image, command, args."""
    migrations = workload.migrations
    if migrations is None:
        raise ValueError("migration_key needs spec.workload.migrations")
    canonical = json.dumps(
        {"args": migrations.args, "command": migrations.command, "image": workload.image},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pinned_image(image: str, image_id: str) -> str | None:
    """`image`'s repository at the digest the kubelet reported the migration's container
    ran (its ``imageID``), or None: when it reported no sha256 digest, or one of another
    repository (an ``imageID`` names the repository the bytes came from; another one is
    not what the spec asked for, and would move the Deployment to a repository no one
    chose). An `image` given by digest is kept exactly as written.

    Why: a tag can be pushed again. The Deployment then runs the very bytes the
    migration ran, not whatever the tag names by the time its pods pull it.
    """
    if "@" in image:
        return image
    match = _DIGEST.search(image_id)
    if match is None:
        return None
    name = _repository(image)
    if _normal(_repository(image_id.removeprefix("docker-pullable://"))) != _normal(name):
        return None
    return f"{name}@{match.group(1)}"


def _repository(reference: str) -> str:
    """The repository of an image reference, as written, without tag or digest."""
    name = reference.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    return name


def _normal(name: str) -> str:
    """`name` as the container runtime spells it: docker.io for a name without a
    registry, library/ for an official image."""
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = "docker.io", name
    if first in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        first = "docker.io"
        if "/" not in rest:
            rest = f"library/{rest}"
    return f"{first}/{rest}"


def migration_job_name(key: str) -> str:
    """``cleo-migrate-<first 10 hex digits of the key>``."""
    return JOB_PREFIX + key[:SHORT_HASH]


def migration_pod_labels(tenant: str, key: str) -> dict[str, str]:
    """The Job's selector and its pods' labels (see the module docstring)."""
    return sorted_map(
        {**tenant_labels(tenant, component=COMPONENT), MIGRATION_LABEL: key[:SHORT_HASH]}
    )


def render_migration_job(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    spec: CleoTenantSpec,
    database_secret: str,
    nonce: str,
) -> KubeObject:
    """The Job that runs spec.workload.migrations in spec.workload.image; `nonce` is the
    attempt's (annotation `NONCE_ANNOTATION`)."""
    workload = spec.workload
    if workload is None or workload.migrations is None:
        raise ValueError("render_migration_job needs spec.workload.migrations")
    migrations = workload.migrations
    key = migration_key(workload)
    labels = migration_pod_labels(tenant, key)
    env_from: list[dict[str, Any]] = []
    if workload.config:
        env_from.append({"configMapRef": {"name": CONFIG_MAP_NAME}})
    env_from.append({"secretRef": {"name": database_secret}})
    container: dict[str, Any] = {
        "name": MIGRATION_CONTAINER,
        "image": workload.image,
        "command": list(migrations.command),
        "envFrom": env_from,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108
            database_ca_mount(),
        ],
    }
    if migrations.args:
        container["args"] = list(migrations.args)
    if workload.image_pull_policy is not None:
        container["imagePullPolicy"] = workload.image_pull_policy
    if workload.resources is not None:
        resources = workload.resources.model_dump(exclude_none=True, by_alias=True)
        resources = {k: {n: str(v) for n, v in r.items()} for k, r in resources.items() if r}
        if resources:
            container["resources"] = resources
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": migration_job_name(key),
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                KEY_ANNOTATION: key,
                IMAGE_ANNOTATION: workload.image,
                NONCE_ANNOTATION: nonce,
            },
            "ownerReferences": [owner.copy()],
        },
        "spec": {
            "backoffLimit": migrations.backoff_limit,
            # A replacement pod only once the previous one failed: the default
            # (TerminatingOrFailed) starts it while a deleted pod still terminates, and two
            # migrations would run against one schema.
            "podReplacementPolicy": "Failed",
            "activeDeadlineSeconds": int(parse_duration(migrations.timeout).total_seconds()),
            "completions": 1,
            "parallelism": 1,
            "manualSelector": True,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": WORKLOAD_NAME,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": dict(restricted_pod_security(RUN_AS_ID)),
                    "containers": [container],
                    "volumes": [
                        {"name": TMP_VOLUME, "emptyDir": {}},
                        {
                            "name": DATABASE_CA_VOLUME,
                            "secret": dict(database_ca_source(database_secret)),
                        },
                    ],
                },
            },
        },
    }


def render_migration_policy(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """Egress of the migration pods: DNS and the database ranges; None without migrations."""
    if spec.workload is None or spec.workload.migrations is None:
        return None
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}},
                    "podSelector": {"matchLabels": sorted_map(DNS_POD_LABELS)},
                }
            ],
            "ports": [
                {"protocol": "UDP", "port": DNS_PORT},
                {"protocol": "TCP", "port": DNS_PORT},
            ],
        },
        *(dict(rule) for rule in database_egress_rules(spec)),
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": MIGRATION_POLICY,
            "namespace": namespace,
            "labels": sorted_map(tenant_labels(tenant, component="network")),
            "ownerReferences": [owner.copy()],
        },
        "spec": {
            "podSelector": {
                "matchLabels": sorted_map(tenant_labels(tenant, component=COMPONENT)),
                "matchExpressions": [{"key": MIGRATION_LABEL, "operator": "Exists"}],
            },
            "policyTypes": ["Ingress", "Egress"],
            "egress": egress,
        },
    }
