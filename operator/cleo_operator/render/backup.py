"""What a CleoBackup becomes on the cluster: its runner's identity, rights, network path and
schedule. Pure: a spec and settings in, Kubernetes objects out.

Objects, all in the backup's namespace, labelled with the tenant and ``cleoai.io/backup``,
and owned by the CleoBackup (deleting it deletes them, never the archives):

- a ServiceAccount ``cleo-backup-<name>`` for the runner pods, without an automounted
  token (the pod template asks for one itself, so no other pod gets one by accident), and
  with the cloud's annotation when the destination uses workload identity
  (`render.backup_identity`);
- a Role and RoleBinding that let exactly that identity ``get`` its own CleoBackup and
  ``patch`` its status (``resourceNames``: nothing else in the namespace, not even the
  other CleoBackups; a one-off made with ``spec.from`` may also ``get`` the CleoBackup it
  runs, which its runner checks and reads its retention from). No rule on Secrets: the
  database credentials, the keyring and the object store's keys reach the pod through the kubelet
  (environment and a read-only volume), which needs no right of the pod's own; an API
  right to read them would only be a second, unneeded way in;
- a NetworkPolicy that opens egress for the runner pods to named destinations only: the
  API server's addresses (`BackupPodSettings.api_server_cidrs`, an operator setting or what
  the operator found at start) on its ports, to write the status; and for an object store,
  the ranges the CleoBackup names (``destination.<type>.egress``, or the endpoint's IP
  address) and the platform's (`BackupPodSettings.object_store_cidrs`) on the endpoint's
  port (and 443 for a token service), plus the metadata address an identity needs. Nothing
  else, and never ``0.0.0.0/0``: the tenant's own policies already give every
  pod of the namespace the database ranges and DNS, and a PVC destination needs no network.
  `egress_problem` says when a spec leaves the object store's addresses unknown. The policy
  selects pods by labels, which is why the admission policy of deploy/admission refuses
  those labels to everyone but the operator and the Job controller (a tenant pod wearing
  them would get this egress);
- a CronJob ``cleo-backup-<name>`` for a schedule, or a Job of that name for a one-off
  backup. Its pod runs ``cleo-operator backup run --backup NAMESPACE/NAME`` from the
  operator's own image, so what backs up is always the version that reconciles, pulled with
  the operator's pull policy and its copies of the operator's pull secrets
  (`render.pull_secrets`).

The pod passes Pod Security ``restricted`` (non-root 10001, read-only root filesystem with
an emptyDir ``/tmp`` for pg_dump's and pg_restore's files, every capability dropped,
RuntimeDefault seccomp). The database login arrives as libpq's variables from the tenant's
database Secret (`ConnectionInfo.from_environment`), the keyring Secret is mounted
read-only (`load_keyring_dir`), the destination is a mounted PersistentVolumeClaim or an
object store reached with the keys of the Secret the spec names or a workload identity.
``CLEO_JOB_NAME`` (from the pod's own ``batch.kubernetes.io/job-name`` label) lets a run
name its Job in the status history.

Why Jobs never retry a scheduled run (``backoffLimit: 0``): the next scheduled run is the
retry, and every attempt writes a history entry; a pod that dies before it reports is
found by the reconciler through the failed Job. A one-off backup has no next run, so its
Job retries twice.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from cleo_operator.api.backup import CleoBackupSpec
from cleo_operator.api.base import ResourceList
from cleo_operator.api.base import ResourceRequirements as RunnerResources
from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.render import backup_shapes as shapes
from cleo_operator.render.backup_identity import (
    S3_ENV,
    object_store_url,
    runner_identity,
    secret_env,
)
from cleo_operator.render.child import (
    DATABASE_CA_VOLUME,
    database_ca_mount,
    database_ca_source,
    restricted_pod_security,
)
from cleo_operator.render.k8s import (
    RBAC_GROUP,
    LabelSelector,
    NetworkPolicy,
    NetworkPolicyEgressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    ObjectMeta,
    ResourceRequirements,
    ServiceAccount,
    VolumeMount,
    as_object,
)
from cleo_operator.render.meta import API_VERSION, tenant_labels

__all__ = [
    "BACKUP_LABEL",
    "COMPONENT",
    "CONTAINER_NAME",
    "DATABASE_ENV",
    "DATABASE_OPTIONAL_ENV",
    "DEFAULT_IMAGE_REPOSITORY",
    "JOB_NAME_ENV",
    "JOB_NAME_LABEL",
    "KEYRING_MOUNT",
    "ONE_OFF_DEADLINE_SECONDS",
    "RUN_PREFIX",
    "S3_ENV",
    "TERMINATION_LOG",
    "VOLUME_MOUNT",
    "BackupObjects",
    "BackupPodSettings",
    "backup_destination",
    "backup_labels",
    "backup_object_name",
    "backup_owner",
    "backup_pod_labels",
    "egress_problem",
    "render_backup",
    "render_cron_job",
    "render_job",
    "render_network_policy",
    "render_role",
    "render_role_binding",
    "render_service_account",
    "role_rules",
    "runner_service_account",
    "s3_egress_cidrs",
    "store_egress_cidrs",
]

BACKUP_LABEL: Final = "cleoai.io/backup"
"""On every object of a CleoBackup and its pods: the CleoBackup's name."""
COMPONENT: Final = "backup"
"""The ``app.kubernetes.io/component`` of a CleoBackup's objects."""
NAME_PREFIX: Final = "cleo-backup-"
"""Every object of a CleoBackup is ``cleo-backup-<name>`` (``cleo-`` is the operator's)."""
RUN_PREFIX: Final = "cleo-run-"
"""Objects of a one-off made with ``spec.from`` are ``cleo-run-<name>``: a name no CronJob
of the operator's can give its Jobs (``cleo-backup-<source>-<minutes>``), so a one-off
named after a scheduled run can never take that run's Job name first."""
ONE_OFF_DEADLINE_SECONDS: Final = 6 * 3600
"""How long a ``spec.from`` one-off's Job may run, pods that never start included."""
CONTAINER_NAME: Final = "backup"
APP_NAME: Final = "cleo-backup"
"""The ``app.kubernetes.io/name`` of the runner pods."""
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
"""Set on every pod by the Job controller (Kubernetes 1.27 and later)."""
JOB_NAME_ENV: Final = "CLEO_JOB_NAME"
"""The runner's own Job, from the label above: what its history entry names."""
TRACEPARENT_ENV: Final = "TRACEPARENT"
"""The W3C trace context a runner starts its spans under (`BackupPodSettings.trace_env`)."""

KEYRING_MOUNT: Final = "/var/run/cleo/keyring"
"""Where the tenant keyring Secret is mounted, read-only."""
VOLUME_MOUNT: Final = "/var/lib/cleo/backup"
"""Where a PersistentVolumeClaim destination is mounted."""
TMP_MOUNT: Final = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
TERMINATION_LOG: Final = "/dev/termination-log"
"""Where the runner writes its JSON report (the pod's termination message)."""
RUN_AS_ID: Final = 10001
"""The image's user and group (see the Dockerfile)."""
SECRET_FILE_MODE: Final = 0o440
"""Keyring files: readable by the owner and the pod's fsGroup, nobody else."""

DATABASE_ENV: Final = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE")
"""Keys of the tenant database Secret the runner gets (libpq's own variables)."""
DATABASE_OPTIONAL_ENV: Final = ("PGSSLROOTCERT",)
"""Keys the tenant database Secret holds when the site verifies the server (its CA file,
mounted from the same Secret's ``ca.crt``, or ``system``)."""

DEFAULT_IMAGE_REPOSITORY: Final = "ghcr.io/cleoai/cleo-operator"
API_SERVER_PORTS: Final = (443, 6443)
"""The API server's usual ports: 443 (the ``kubernetes`` Service, managed clusters) and
6443 (kubeadm's endpoints, which NetworkPolicies see after the Service's translation)."""

SCHEDULED_BACKOFF_LIMIT: Final = 0
ONE_OFF_BACKOFF_LIMIT: Final = 2
STARTING_DEADLINE_SECONDS: Final = 600
"""A run the CronJob controller missed (it was down) still starts within 10 minutes;
older misses are skipped rather than piling up."""
SUCCESSFUL_JOBS_KEPT: Final = 3
FAILED_JOBS_KEPT: Final = 3


@dataclass(frozen=True, kw_only=True)
class BackupPodSettings:
    """What the operator decides about every runner pod (not the CleoBackup's owner)."""

    image: str
    """The operator's image (``CLEO_OPERATOR_IMAGE``): the runner is the operator itself."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """The runner's pull policy; None leaves Kubernetes' default."""
    database_secret: str = "cleo-database"  # noqa: S105 - an object name
    """The tenant database Secret (libpq variables) in the tenant's namespace."""
    keyring_secret: str = "cleo-keyring"  # noqa: S105 - an object name
    """The tenant keyring Secret (``keyring.json``, ``vN.key``) in the tenant's namespace."""
    api_server_cidrs: tuple[str, ...] = ()
    """The API server's addresses as the runner's NetworkPolicy sees them (its endpoints,
    not only the ``kubernetes`` Service's ClusterIP); empty: unknown (`egress_problem`)."""
    api_server_ports: tuple[int, ...] = API_SERVER_PORTS
    """TCP ports of the API server, as the runner's NetworkPolicy sees them."""
    object_store_cidrs: tuple[str, ...] = ()
    """The platform's object store ranges: every object store runner may reach them (on its
    endpoint's port) besides what its CleoBackup names in ``destination.<type>.egress``."""
    image_pull_secrets: tuple[str, ...] = ()
    """Secrets of the tenant namespace the runner's pod pulls its image with: the operator's
    copies (``cleo-pull-*``, `reconcile.pull_secrets`) of the registry Secrets its setting
    names in its own namespace (the kubelet pulls anonymously past a missing one)."""
    resources: RunnerResources | None = None
    """The runner container's resources when its CleoBackup sets none (``spec.resources``
    replaces them whole: half a pair could leave a request above its limit)."""
    one_off_deadline_seconds: int = ONE_OFF_DEADLINE_SECONDS
    """``activeDeadlineSeconds`` of a ``spec.from`` one-off's Job."""
    trace_env: tuple[tuple[str, str], ...] = ()
    """Variables for the runner's traces, last in its env: the ``OTEL_*`` exporter settings
    and ``TRACEPARENT`` (the reconcile that rendered it), so a run's spans are children of
    that reconcile. Empty when tracing is off (the reconciler decides, see
    `with_kept_traceparent` for how a new trace id does not rewrite the CronJob)."""


# --- names, labels, owner ---------------------------------------------------------------------


def backup_object_name(name: str, *, source: str | None = None) -> str:
    """The name of every object of CleoBackup `name` (CronJob, Job, ServiceAccount, ...);
    with `source` (its ``spec.from``), ``cleo-run-<name>`` (see `RUN_PREFIX`)."""
    return (NAME_PREFIX if source is None else RUN_PREFIX) + name


def runner_service_account(name: str, *, source: str | None = None) -> str:
    """The ServiceAccount the runner pods of CleoBackup `name` run as: its own, or for a
    one-off made with ``spec.from`` its source's, whose name the cloud's workload identity
    trusts (a one-off gets no identity of its own, so the trust never needs widening)."""
    return backup_object_name(source if source is not None else name)


def backup_labels(*, name: str, tenant: str) -> dict[str, str]:
    """Labels of a CleoBackup's objects: the tenant's, the component, and the backup."""
    return dict(sorted({**tenant_labels(tenant, component=COMPONENT), BACKUP_LABEL: name}.items()))


def backup_pod_labels(*, name: str, tenant: str) -> dict[str, str]:
    """Labels of the runner pods (and their Jobs' templates).

    Not the operator's managed-by label: the pods are the Jobs' children, and code that
    lists "our children" by that label must not find them.
    """
    return dict(
        sorted(
            {
                "app.kubernetes.io/name": APP_NAME,
                "app.kubernetes.io/component": COMPONENT,
                BACKUP_LABEL: name,
                "cleoai.io/tenant": tenant,
            }.items()
        )
    )


def backup_owner(*, name: str, uid: str) -> OwnerReference:
    """The owner reference that ties an object to its CleoBackup (for garbage collection)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "CleoBackup",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(
    *, name: str, namespace: str, uid: str, tenant: str, source: str | None = None
) -> ObjectMeta:
    return {
        "name": backup_object_name(name, source=source),
        "namespace": namespace,
        "labels": backup_labels(name=name, tenant=tenant),
        "ownerReferences": [backup_owner(name=name, uid=uid)],
    }


# --- identity and rights ----------------------------------------------------------------------


def render_service_account(
    *, name: str, namespace: str, uid: str, tenant: str, spec: CleoBackupSpec | None = None
) -> KubeObject:
    """The runner's ServiceAccount; no token is mounted unless a pod asks (ours do). With a
    workload identity, the cloud's annotation names it (`render.backup_identity`)."""
    meta = _meta(name=name, namespace=namespace, uid=uid, tenant=tenant)
    annotations = runner_identity(spec).service_account_annotations if spec else {}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    obj: ServiceAccount = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "automountServiceAccountToken": False,
    }
    return as_object(obj)


def role_rules(name: str, *, source: str | None = None) -> list[shapes.ResourceRule]:
    """Get this CleoBackup (and `source`, the one ``spec.from`` runs), patch its status:
    nothing else (see the module docstring)."""
    readable = [name] if source is None or source == name else [name, source]
    rights: tuple[tuple[str, Literal["get", "patch"], list[str]], ...] = (
        ("cleobackups", "get", readable),
        ("cleobackups/status", "patch", [name]),
    )
    return [
        {"apiGroups": ["cleoai.io"], "resources": [res], "resourceNames": names, "verbs": [verb]}
        for res, verb, names in rights
    ]


def render_role(
    *, name: str, namespace: str, uid: str, tenant: str, source: str | None = None
) -> KubeObject:
    """The runner's Role: its own CleoBackup only (and reading its ``spec.from``)."""
    obj: shapes.Role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name=name, namespace=namespace, uid=uid, tenant=tenant, source=source),
        "rules": role_rules(name, source=source),
    }
    return as_object(obj)


def render_role_binding(
    *, name: str, namespace: str, uid: str, tenant: str, source: str | None = None
) -> KubeObject:
    """Binds the runner's Role to the ServiceAccount its pods run as, and to nobody else."""
    account = runner_service_account(name, source=source)
    obj: shapes.RoleBinding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name=name, namespace=namespace, uid=uid, tenant=tenant, source=source),
        "roleRef": {
            "apiGroup": RBAC_GROUP,
            "kind": "Role",
            "name": backup_object_name(name, source=source),
        },
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    return as_object(obj)


# --- network -----------------------------------------------------------------------------------


def _s3_port(endpoint: str | None) -> int | None:
    if endpoint is None:
        return None
    parts = urlsplit(endpoint)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _host_network(endpoint: str | None) -> str | None:
    """The endpoint's host as a one-address range when it is an IP address, else None."""
    if endpoint is None:
        return None
    host = urlsplit(endpoint).hostname
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ipaddress.ip_network(address))


def store_egress_cidrs(spec: CleoBackupSpec) -> tuple[str, ...]:
    """The object store's ranges: the destination's ``egress`` and an IP-address endpoint."""
    store = spec.resolved_destination().object_store
    if store is None:
        return ()
    ranges = {str(ipaddress.ip_network(c, strict=False)) for c in store.egress or ()}
    host = _host_network(store.endpoint)
    if host is not None:
        ranges.add(host)
    return tuple(sorted(ranges, key=_range_order))


s3_egress_cidrs = store_egress_cidrs
"""The older name of `store_egress_cidrs` (S3 was the only object store)."""


def egress_problem(spec: CleoBackupSpec, settings: BackupPodSettings) -> str | None:
    """Why the runner's egress cannot be rendered as it must be, naming the field; None if
    it can."""
    store = spec.resolved_destination().object_store
    if store is not None and not _store_cidrs(spec, settings):
        block = spec.resolved_destination().type
        where = (
            f"the endpoint {store.endpoint!r} is a name" if store.endpoint else "no endpoint is set"
        )
        return (
            f"spec.destination.{block}.egress: {where}, so the object store's addresses are "
            "unknown and the runner may not reach it; list its address ranges there (e.g. "
            f"egress: [203.0.113.0/24]), or set spec.destination.{block}.endpoint to an IP "
            "address (or the operator's CLEO_BACKUP_OBJECT_STORE_CIDRS; chart: "
            "backup.egress.objectStorage)"
        )
    if not settings.api_server_cidrs:
        return (
            "the operator does not know the API server's addresses, so the runner could not "
            "report its run: set CLEO_BACKUP_API_SERVER_CIDRS in the operator's environment "
            "(chart: backup.egress.apiServer) to the API server's endpoint addresses"
        )
    return None


def _store_cidrs(spec: CleoBackupSpec, settings: BackupPodSettings) -> tuple[str, ...]:
    """What a runner may reach of object storage: its CleoBackup's and the platform's."""
    if spec.resolved_destination().object_store is None:
        return ()
    return (*store_egress_cidrs(spec), *settings.object_store_cidrs)


def _range_order(cidr: str) -> tuple[int, int, int]:
    network = ipaddress.ip_network(cidr)
    return (network.version, int(network.network_address), network.prefixlen)


def _peers(cidrs: tuple[str, ...]) -> list[NetworkPolicyPeer]:
    unique = {str(ipaddress.ip_network(c, strict=False)) for c in cidrs}
    return [{"ipBlock": {"cidr": c}} for c in sorted(unique, key=_range_order)]


def render_network_policy(
    *,
    name: str,
    namespace: str,
    uid: str,
    tenant: str,
    spec: CleoBackupSpec,
    settings: BackupPodSettings,
    source: str | None = None,
) -> KubeObject:
    """Egress for the runner pods to the API server and the CleoBackup's object store only.

    A destination whose addresses are unknown gets no rule (see `egress_problem`): the
    runner is then held by the tenant's default-deny, never let out to everywhere.
    """
    egress: list[NetworkPolicyEgressRule] = []
    if settings.api_server_cidrs:
        api_ports: list[NetworkPolicyPort] = [
            {"protocol": "TCP", "port": p} for p in sorted(set(settings.api_server_ports))
        ]
        egress.append({"to": _peers(settings.api_server_cidrs), "ports": api_ports})
    store = _store_cidrs(spec, settings)
    destination = spec.resolved_destination().object_store
    identity = runner_identity(spec)
    if destination is not None and store:
        ports = {_s3_port(destination.endpoint) or 443}
        if identity.token_service:
            ports.add(443)  # STS or Entra ID, in the ranges the CleoBackup names
        egress.append(
            {
                "to": _peers(store),
                "ports": [{"protocol": "TCP", "port": port} for port in sorted(ports)],
            }
        )
    for cidr, port in identity.platform_egress:
        egress.append({"to": _peers((cidr,)), "ports": [{"protocol": "TCP", "port": port}]})
    selector: LabelSelector = {
        "matchLabels": {
            BACKUP_LABEL: name,
            "app.kubernetes.io/name": APP_NAME,
        }
    }
    obj: NetworkPolicy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name=name, namespace=namespace, uid=uid, tenant=tenant, source=source),
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }
    return as_object(obj)


# --- the runner pod ----------------------------------------------------------------------------


def backup_destination(spec: CleoBackupSpec) -> str:
    """The runner's ``--destination``: a folder on the mounted volume, or an object store's
    URL (``s3://``, ``gs://``, ``azure://``)."""
    destination = spec.resolved_destination()
    if destination.pvc is not None:
        path = destination.pvc.path
        return f"{VOLUME_MOUNT}/{path}" if path else VOLUME_MOUNT
    url = object_store_url(spec)
    assert url is not None  # the model guarantees one block per type
    return url


def _amounts(amounts: ResourceList | None) -> dict[str, str]:
    if amounts is None:
        return {}
    pairs = (("cpu", amounts.cpu), ("memory", amounts.memory))
    return {key: str(value) for key, value in pairs if value is not None}


def _resources(spec: CleoBackupSpec, settings: BackupPodSettings) -> ResourceRequirements:
    """The CleoBackup's resources, else the operator's (whole, never mixed)."""
    rendered: ResourceRequirements = {}
    chosen = spec.resources if spec.resources is not None else settings.resources
    if chosen is None:
        return rendered
    requests = _amounts(chosen.requests)
    limits = _amounts(chosen.limits)
    # An empty map is dropped by the API server (and would then look like drift).
    if requests:
        rendered["requests"] = requests
    if limits:
        rendered["limits"] = limits
    return rendered


def _env(spec: CleoBackupSpec, settings: BackupPodSettings) -> list[shapes.EnvVar]:
    env = secret_env(DATABASE_ENV, settings.database_secret)
    env += secret_env(DATABASE_OPTIONAL_ENV, settings.database_secret, optional=True)
    env += runner_identity(spec).env
    env.append(
        {
            "name": JOB_NAME_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}},
        }
    )
    env += [{"name": key, "value": value} for key, value in settings.trace_env]
    return env


def _runner_env(obj: KubeObject) -> list[dict[str, object]] | None:
    """The runner container's env list of a CronJob or Job (the object's own list)."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            env = container.setdefault("env", [])
            return env if isinstance(env, list) else None
    return None


def with_kept_traceparent(desired: KubeObject, live: KubeObject | None) -> KubeObject:
    """`desired` (a runner) with the ``TRACEPARENT`` that `live` has, or none if it has
    none: what to compare with `live`. Each reconcile has a trace id of its own, so
    comparing the fresh one would rewrite the CronJob at every resync; a runner is given a
    new one only when it is written anyway (made, or its spec otherwise changed)."""
    kept = copy.deepcopy(desired)
    env = _runner_env(kept)
    if env is None:
        return kept
    env[:] = [e for e in env if e.get("name") != TRACEPARENT_ENV]
    live_env = _runner_env(copy.deepcopy(live)) if live is not None else None
    for entry in live_env or []:
        if entry.get("name") == TRACEPARENT_ENV:
            env.append(entry)
            break
    return kept


def runner_command(*, name: str, namespace: str, spec: CleoBackupSpec) -> list[str]:
    """The runner's command line (the image's entry point is ``cleo-operator`` too)."""
    return [
        "cleo-operator",
        "backup",
        "run",
        "--backup",
        f"{namespace}/{name}",
        "--destination",
        backup_destination(spec),
        "--keyring-dir",
        KEYRING_MOUNT,
        "--report",
        TERMINATION_LOG,
    ]


def _pod_template(
    *,
    name: str,
    namespace: str,
    tenant: str,
    spec: CleoBackupSpec,
    settings: BackupPodSettings,
    source: str | None = None,
) -> shapes.PodTemplate:
    mounts: list[VolumeMount] = [
        {"name": "tmp", "mountPath": TMP_MOUNT},
        {"name": "keyring", "mountPath": KEYRING_MOUNT, "readOnly": True},
    ]
    volumes: list[shapes.Volume] = [
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "keyring",
            "secret": {"secretName": settings.keyring_secret, "defaultMode": SECRET_FILE_MODE},
        },
    ]
    # The site's CA, from the credentials Secret: the runner checks the server as the
    # operator does (PGSSLROOTCERT names this file); an empty folder for a weak sslMode.
    mounts.append(database_ca_mount())
    volumes.append(
        {"name": DATABASE_CA_VOLUME, "secret": database_ca_source(settings.database_secret)}
    )
    identity = runner_identity(spec)
    mounts += identity.mounts
    volumes += identity.volumes
    pvc = spec.resolved_destination().pvc
    if pvc is not None:
        mounts.append({"name": "destination", "mountPath": VOLUME_MOUNT})
        volumes.append(
            {"name": "destination", "persistentVolumeClaim": {"claimName": pvc.claim_name}}
        )
    container: shapes.Container = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "command": runner_command(name=name, namespace=namespace, spec=spec),
        "env": _env(spec, settings),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": TERMINATION_LOG,
        # The report is the message; a runner that crashed before writing it leaves its log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if settings.image_pull_policy is not None:
        container["imagePullPolicy"] = settings.image_pull_policy
    resources = _resources(spec, settings)
    if resources:
        container["resources"] = resources
    pod: shapes.PodSpec = {
        "serviceAccountName": runner_service_account(name, source=source),
        # The ServiceAccount mounts no token by default; the runner needs one.
        "automountServiceAccountToken": True,
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(RUN_AS_ID),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    labels = {**backup_pod_labels(name=name, tenant=tenant), **identity.pod_labels}
    return {"metadata": {"labels": dict(sorted(labels.items()))}, "spec": pod}


def render_cron_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    tenant: str,
    spec: CleoBackupSpec,
    settings: BackupPodSettings,
) -> KubeObject:
    """The CronJob of a scheduled CleoBackup (`spec.schedule` must be set)."""
    if spec.schedule is None:
        raise ValueError("a CronJob needs spec.schedule; render a one-off Job instead")
    template = _pod_template(
        name=name, namespace=namespace, tenant=tenant, spec=spec, settings=settings
    )
    cron_spec: shapes.CronJobSpec = {
        "schedule": spec.schedule,
        "suspend": spec.suspend,
        "concurrencyPolicy": spec.concurrency_policy,
        "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": min(SUCCESSFUL_JOBS_KEPT, spec.history_limit),
        "failedJobsHistoryLimit": min(FAILED_JOBS_KEPT, spec.history_limit),
        "jobTemplate": {
            "metadata": {"labels": backup_pod_labels(name=name, tenant=tenant)},
            "spec": {"backoffLimit": SCHEDULED_BACKOFF_LIMIT, "template": template},
        },
    }
    if spec.time_zone is not None:
        cron_spec["timeZone"] = spec.time_zone
    obj: shapes.CronJob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(name=name, namespace=namespace, uid=uid, tenant=tenant),
        "spec": cron_spec,
    }
    return as_object(obj)


def render_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    tenant: str,
    spec: CleoBackupSpec,
    settings: BackupPodSettings,
    source: str | None = None,
) -> KubeObject:
    """The Job of a one-off CleoBackup (no schedule): it runs once, retried twice. A one-off
    made with ``spec.from`` gets a deadline: a pod a tenant keeps from starting still ends
    the Job (and so lets the one-off expire)."""
    job_spec: shapes.JobSpec = {
        "backoffLimit": ONE_OFF_BACKOFF_LIMIT,
        "template": _pod_template(
            name=name,
            namespace=namespace,
            tenant=tenant,
            spec=spec,
            settings=settings,
            source=source,
        ),
    }
    if source is not None:
        job_spec["activeDeadlineSeconds"] = settings.one_off_deadline_seconds
    obj: shapes.Job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name=name, namespace=namespace, uid=uid, tenant=tenant, source=source),
        "spec": job_spec,
    }
    return as_object(obj)


@dataclass(frozen=True, kw_only=True)
class BackupObjects:
    """Every object of a CleoBackup, by role; iterating gives them in apply order."""

    service_account: KubeObject | None
    """None for a one-off made with ``spec.from``: its pods run as its source's."""
    role: KubeObject
    role_binding: KubeObject
    network_policy: KubeObject
    runner: KubeObject
    """The CronJob of a scheduled backup, or the Job of a one-off one."""

    @property
    def before_runner(self) -> tuple[KubeObject, ...]:
        """The runner's identity, rights and network path: in place before its pods start."""
        own = (self.service_account,) if self.service_account is not None else ()
        return (*own, self.role, self.role_binding, self.network_policy)

    def __iter__(self) -> Iterator[KubeObject]:
        return iter((*self.before_runner, self.runner))


def render_backup(
    *,
    name: str,
    namespace: str,
    uid: str,
    tenant: str,
    spec: CleoBackupSpec,
    settings: BackupPodSettings,
    source: str | None = None,
) -> BackupObjects:
    """Every object of a CleoBackup; for a one-off made with ``spec.from``, `spec` is its
    effective spec (`reconcile.backup_source`) and `source` the CleoBackup it runs."""
    ids = {"name": name, "namespace": namespace, "uid": uid, "tenant": tenant}
    runner = (
        render_cron_job(**ids, spec=spec, settings=settings)
        if spec.schedule is not None
        else render_job(**ids, spec=spec, settings=settings, source=source)
    )
    return BackupObjects(
        service_account=None if source is not None else render_service_account(**ids, spec=spec),
        role=render_role(**ids, source=source),
        role_binding=render_role_binding(**ids, source=source),
        network_policy=render_network_policy(**ids, spec=spec, settings=settings, source=source),
        runner=runner,
    )
