"""The backup runner's registry credentials in a tenant namespace: copies of the operator's.

Why copies: a pod can only name Secrets of its own namespace, and the pull secrets the
chart's ``backup.imagePullSecrets`` names live in the operator's namespace. A runner pod
that names them in the tenant namespace pulls anonymously (ImagePullBackOff on a private
registry). So the operator copies each named Secret into every tenant namespace that runs a
backup, as CloudNativePG copies its pull secret into each cluster's namespace, and the
runner pods name the copies.

Why ``cleo-pull-<source>``: names starting with ``cleo-`` are the operator's in tenant
namespaces (the ``cleo-tenant-protection`` admission policy refuses them to everyone else),
so nobody can plant a Secret at a copy's name before the operator makes it; and the copy
carries ``app.kubernetes.io/managed-by: cleo-operator``, so nobody but the operator may
change or delete it. Without the policy the reconciler still replaces a Secret at that name
that is not its own, and puts back a copy that was changed.

Why only ``kubernetes.io/dockerconfigjson``: the setting names registry credentials; a
Secret of another type at that name (a database password, a cloud key) must never be
copied into a namespace whose admins read every Secret (`pull_source_problem`).

Why owned by every CleoBackup of the namespace (none of them its controller): the copy is
shared by the namespace's backups, and the garbage collector deletes it with the last one,
so a namespace that stops running backups stops holding the credential.

The copy is readable by the tenant's admins (they read every Secret of their namespace):
docs/security.md says what that means for the credential to choose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.render.meta import API_VERSION, MANAGED_BY, MANAGED_BY_LABEL, tenant_labels

__all__ = [
    "COMPONENT",
    "COPY_PREFIX",
    "COPY_SELECTOR",
    "PULL_SECRET_KEY",
    "PULL_SECRET_TYPE",
    "SOURCE_ANNOTATION",
    "backup_owner_reference",
    "pull_secret_copy_name",
    "pull_source_problem",
    "render_pull_secret_copy",
]

PULL_SECRET_TYPE: Final = "kubernetes.io/dockerconfigjson"  # noqa: S105 - a type name
"""The one type of Secret that is copied: registry credentials (``docker-registry``)."""
PULL_SECRET_KEY: Final = ".dockerconfigjson"  # noqa: S105 - a key name
"""The key such a Secret must hold (the API server checks it is JSON)."""
COPY_PREFIX: Final = "cleo-pull-"
"""A copy is ``cleo-pull-<source name>`` (``cleo-`` names are the operator's)."""
COMPONENT: Final = "image-pull"
"""The ``app.kubernetes.io/component`` of the copies: how the reconciler finds them all."""
COPY_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY},app.kubernetes.io/component={COMPONENT}"
"""The label selector of every copy in a namespace (only the operator may set these)."""
SOURCE_ANNOTATION: Final = "cleoai.io/copied-from"
"""On a copy: ``<operator namespace>/<source name>``, for people reading it."""

_MAX_NAME: Final = 253
"""A Secret's name is a DNS subdomain."""


def pull_secret_copy_name(source: str) -> str:
    """The copy of Secret `source` in a tenant namespace: ``cleo-pull-<source>``.

    A source name too long for the prefix keeps its start and gets a hash of the whole name,
    so two long names never share a copy.
    """
    name = COPY_PREFIX + source
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    head = (COPY_PREFIX + source)[: _MAX_NAME - len(digest) - 1].rstrip(".-")
    return f"{head}-{digest}"


def pull_source_problem(
    source: Mapping[str, Any] | None, *, name: str, namespace: str
) -> tuple[str, str] | None:
    """Why Secret `namespace`/`name` (read as `source`) may not be copied: a reason and a
    message naming it and what to do; None when it is registry credentials."""
    where = f"Secret {namespace}/{name}"
    setting = "backup.imagePullSecrets (CLEO_BACKUP_IMAGE_PULL_SECRETS)"
    if source is None:
        return (
            "ImagePullSecretMissing",
            f"{where}, named in the operator's {setting}, does not exist: create it in the "
            f"operator's namespace (kubectl -n {namespace} create secret docker-registry "
            f"{name} ...) or remove it from the setting; until then the runner pulls its "
            "image without it",
        )
    kind = source.get("type") or "Opaque"
    if kind != PULL_SECRET_TYPE:
        return (
            "ImagePullSecretInvalid",
            f"{where}, named in the operator's {setting}, is of type {kind}, not "
            f"{PULL_SECRET_TYPE}: only registry credentials are copied into tenant "
            f"namespaces; name a docker-registry Secret instead",
        )
    if not (source.get("data") or {}).get(PULL_SECRET_KEY):
        return (
            "ImagePullSecretInvalid",
            f"{where}, named in the operator's {setting}, has no {PULL_SECRET_KEY}; "
            "recreate it with kubectl create secret docker-registry",
        )
    return None


def backup_owner_reference(backup: Mapping[str, Any]) -> OwnerReference:
    """A CleoBackup as one of a copy's owners (not its controller: the copy is shared)."""
    meta = backup["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "CleoBackup",
        "name": str(meta["name"]),
        "uid": str(meta["uid"]),
        "controller": False,
        "blockOwnerDeletion": False,
    }


def render_pull_secret_copy(
    *,
    source: Mapping[str, Any],
    source_namespace: str,
    namespace: str,
    tenant: str,
    owners: Iterable[OwnerReference],
) -> KubeObject:
    """The copy of registry Secret `source` in tenant namespace `namespace`.

    Only the registry credentials are copied (type and ``.dockerconfigjson``), never the
    source's labels or annotations. `source` must pass `pull_source_problem`.
    """
    name = str(source["metadata"]["name"])
    data = str((source.get("data") or {})[PULL_SECRET_KEY])
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": PULL_SECRET_TYPE,
        "metadata": {
            "name": pull_secret_copy_name(name),
            "namespace": namespace,
            "labels": tenant_labels(tenant, component=COMPONENT),
            "annotations": {SOURCE_ANNOTATION: f"{source_namespace}/{name}"},
            "ownerReferences": sorted(owners, key=lambda o: (o["name"], o["uid"])),
        },
        "data": {PULL_SECRET_KEY: data},
    }
