"""The CleoAI workload: its ConfigMap, Deployment and Service.

Choices, and why:

- Pods must pass Pod Security ``restricted``, which the tenant's namespace enforces: a
  non-root user (10001), no privilege escalation, every capability dropped, the runtime's
  seccomp profile. The root filesystem is read-only, so ``/tmp`` is an emptyDir.
- ``replicas`` is rendered only when autoscaling is off. Under an HPA the field is left
  out, so that server-side apply does not take it back from the HPA on every reconcile.
  When autoscaling is off and the spec names no count, one pod is rendered explicitly, so
  that switching the HPA off always lands on a known number.
- Pods roll when their configuration changes even though the Deployment's own fields do
  not: the pod template carries ``cleoai.io/config-checksum``, a hash over the Secrets'
  fingerprints and the config (`config_checksum`), computed by the caller.
- Environment precedence, lowest first: the ConfigMap, the tenant's unsealed Secrets (by
  name), the database Secret, then ``spec.workload.env`` (Kubernetes lets ``env`` win over
  every ``envFrom``, and a later ``envFrom`` source over an earlier one). The database
  Secret comes late so that a stale copy of its keys in a sealed secret cannot shadow the
  credentials the operator rotates. ``env`` keeps the spec's order: a value may refer to
  a variable defined before it (``$(NAME)``). With the tenant's pooler serving
  (``pooler_secret``), ``DATABASE_URL``, ``PGHOST``, ``PGPORT`` and ``PGSSLMODE`` point
  at it as ``env`` entries before the spec's (`render.pooler.pooler_env`); a name the spec
  sets itself is left to the spec.
- The selector is `workload_selector`, fixed forever (a Deployment's selector is
  immutable).
- Traces (`WorkloadTracing`, an operator setting, off unless the chart turns it on): the
  container gets ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES`` naming the tenant (``cleoai.tenant``) and its namespace
  (``k8s.namespace.name``), percent-encoded as the OpenTelemetry specification asks
  (`resource_attributes`). They come after the pooler's and before the spec's entries (a
  spec value may refer to them as ``$(OTEL_SERVICE_NAME)``), and the operator's values win:
  a spec entry of one of these names is left out while tracing is on, so a tenant cannot
  point its attributes at another tenant's name (its ConfigMap and Secrets come through
  ``envFrom``, which ``env`` overrides). Turning the setting on or off, or changing it,
  changes the pod template once: the pods roll once, and a resync writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import quote

from cleo_operator.api.base import ResourceList
from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec, WorkloadSpec
from cleo_operator.render.child import (
    CONFIG_MAP_NAME,
    DATABASE_CA_VOLUME,
    HTTP_PORT_NAME,
    WORKLOAD_NAME,
    database_ca_mount,
    database_ca_source,
    restricted_container_security,
    restricted_pod_security,
    sorted_map,
    workload_metadata,
    workload_pod_labels,
    workload_selector,
)
from cleo_operator.render.k8s import (
    ConfigMap,
    Container,
    Deployment,
    DeploymentSpec,
    EnvFromSource,
    EnvVar,
    ResourceRequirements,
    Service,
    Volume,
    as_object,
)
from cleo_operator.render.network import CollectorPeer
from cleo_operator.render.pooler import (
    DATABASE_ROUTE_LABEL,
    POOLER_ROUTE,
    pooler_ca_mount,
    pooler_ca_volume,
    pooler_env,
)

CONFIG_CHECKSUM_ANNOTATION: Final = "cleoai.io/config-checksum"
RUN_AS_ID: Final = 10001
"""User and group of the CleoAI process (any non-zero id passes ``restricted``)."""
SERVICE_PORT: Final = 80
LIVENESS_PATH: Final = "/healthz"
READINESS_PATH: Final = "/readyz"
REVISION_HISTORY_LIMIT: Final = 5
TMP_VOLUME: Final = "tmp"

OTLP_ENDPOINT_ENV: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME_ENV: Final = "OTEL_SERVICE_NAME"
RESOURCE_ATTRIBUTES_ENV: Final = "OTEL_RESOURCE_ATTRIBUTES"
TRACING_ENV: Final = frozenset({OTLP_ENDPOINT_ENV, SERVICE_NAME_ENV, RESOURCE_ATTRIBUTES_ENV})
"""The variables the operator sets while workload tracing is on; its values win."""
TENANT_ATTRIBUTE: Final = "cleoai.tenant"
NAMESPACE_ATTRIBUTE: Final = "k8s.namespace.name"
DEFAULT_SERVICE_NAME: Final = "cleoai"


@dataclass(frozen=True, kw_only=True)
class WorkloadTracing:
    """Where every tenant's CleoAI pods send traces (an operator setting,
    `reconcile.tracing_settings`): the OTLP endpoint, the service name, and the collector
    as their NetworkPolicy's peer."""

    endpoint: str
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` of the pods, e.g. ``http://otel-collector.observability:4318``."""
    collector: CollectorPeer
    """The collector behind the endpoint, as the pods' egress sees it."""
    service_name: str = DEFAULT_SERVICE_NAME
    """``OTEL_SERVICE_NAME`` of the pods."""


def resource_attributes(attributes: Mapping[str, str]) -> str:
    """``OTEL_RESOURCE_ATTRIBUTES`` of `attributes`: ``key=value`` pairs joined by commas,
    in the given order, each key and value percent-encoded beyond the unreserved characters
    (the specification asks for ``,`` ``=`` ``%`` and what is outside the W3C baggage
    octets; ``$`` too, which Kubernetes would read as a variable reference)."""
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in attributes.items())


def tracing_env(tracing: WorkloadTracing, *, tenant: str, namespace: str) -> list[EnvVar]:
    """The OTEL_* variables of a tenant's CleoAI container (see the module docstring)."""
    attributes = resource_attributes({TENANT_ATTRIBUTE: tenant, NAMESPACE_ATTRIBUTE: namespace})
    return [
        {"name": OTLP_ENDPOINT_ENV, "value": tracing.endpoint},
        {"name": SERVICE_NAME_ENV, "value": tracing.service_name},
        {"name": RESOURCE_ATTRIBUTES_ENV, "value": attributes},
    ]


def config_checksum(*, secret_fingerprints: Mapping[str, str], config: Mapping[str, str]) -> str:
    """A sha256 (hex) over the Secrets' fingerprints and the config, independent of order.

    `secret_fingerprints` maps a Secret's name to a fingerprint the caller computed (for
    example a keyed hash of its data); pass fingerprints, never the values themselves.
    The result goes into a pod annotation, which every tenant viewer can read.
    """
    canonical = json.dumps(
        {"config": sorted_map(config), "secrets": sorted_map(secret_fingerprints)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def render_config_map(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The ConfigMap of spec.workload.config; None without a workload or config."""
    if spec.workload is None or not spec.workload.config:
        return None
    obj: ConfigMap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": workload_metadata(
            tenant=tenant, namespace=namespace, owner=owner, name=CONFIG_MAP_NAME
        ),
        "data": sorted_map(spec.workload.config),
    }
    return as_object(obj)


def _amounts(amounts: ResourceList | None) -> dict[str, str]:
    if amounts is None:
        return {}
    pairs = (("cpu", amounts.cpu), ("memory", amounts.memory))
    return {name: str(value) for name, value in pairs if value is not None}


def _resources(workload: WorkloadSpec) -> ResourceRequirements:
    rendered: ResourceRequirements = {}
    if workload.resources is None:
        return rendered
    requests = _amounts(workload.resources.requests)
    limits = _amounts(workload.resources.limits)
    # An empty map is dropped by the API server (and would then look like drift).
    if requests:
        rendered["requests"] = requests
    if limits:
        rendered["limits"] = limits
    return rendered


KEYRING_VOLUME = "keyring"
KEYRING_MOUNT_PATH = "/var/run/cleoai/keyring"
"""Where CleoAI finds its field-level encryption keyring (read-only), named by the
environment variable CLEO_KEYRING_DIR."""


def _env(
    workload: WorkloadSpec,
    *,
    keyring: bool,
    pooler_secret: str | None,
    tracing: list[EnvVar],
) -> list[EnvVar]:
    env: list[EnvVar] = []
    if keyring:
        env.append({"name": "CLEO_KEYRING_DIR", "value": KEYRING_MOUNT_PATH})
    if pooler_secret is not None:
        own = {var.name for var in workload.env}
        env += [cast(EnvVar, var) for var in pooler_env(pooler_secret) if var["name"] not in own]
    env += tracing
    operators = {var["name"] for var in tracing}
    for var in workload.env:
        if var.name in operators:
            continue  # the operator's value wins (see the module docstring)
        item: EnvVar = {"name": var.name}
        # The API server leaves out an empty value; sending "" would look like drift.
        if var.value:
            item["value"] = var.value
        env.append(item)
    return env


def _env_from(
    workload: WorkloadSpec, secret_names: Sequence[str], database_secret: str | None
) -> list[EnvFromSource]:
    sources: list[EnvFromSource] = []
    if workload.config:
        sources.append({"configMapRef": {"name": CONFIG_MAP_NAME}})
    tenant_secrets = sorted(set(secret_names) - {database_secret})
    sources += [{"secretRef": {"name": name}} for name in tenant_secrets]
    if database_secret is not None:
        sources.append({"secretRef": {"name": database_secret}})
    return sources


def _volumes(
    keyring_secret: str | None, database_secret: str | None, pooler_secret: str | None = None
) -> list[Volume]:
    volumes: list[Volume] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    if keyring_secret is not None:
        volumes.append(
            {"name": KEYRING_VOLUME, "secret": {"secretName": keyring_secret, "defaultMode": 0o440}}
        )
    if database_secret is not None:
        volumes.append({"name": DATABASE_CA_VOLUME, "secret": database_ca_source(database_secret)})
    if pooler_secret is not None:
        volumes.append(pooler_ca_volume(pooler_secret))
    return volumes


def _container(
    workload: WorkloadSpec,
    secret_names: Sequence[str],
    database_secret: str | None,
    keyring_secret: str | None,
    *,
    pooler_secret: str | None,
    image: str | None = None,
    tracing: list[EnvVar] | None = None,
) -> Container:
    container: Container = {
        "name": WORKLOAD_NAME,
        "image": image or workload.image,
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": workload.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": READINESS_PATH, "port": HTTP_PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Lenient: a pod that is slow for a minute is taken out of the Service by the
        # readiness probe; restarting it is for a pod that is stuck.
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": HTTP_PORT_NAME},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],  # noqa: S108
    }
    if workload.image_pull_policy is not None:
        container["imagePullPolicy"] = workload.image_pull_policy
    if keyring_secret is not None:
        container["volumeMounts"].append(
            {"name": KEYRING_VOLUME, "mountPath": KEYRING_MOUNT_PATH, "readOnly": True}
        )
    if database_secret is not None:
        container["volumeMounts"].append(database_ca_mount())
    if pooler_secret is not None:
        container["volumeMounts"].append(pooler_ca_mount())
    env = _env(
        workload,
        keyring=keyring_secret is not None,
        pooler_secret=pooler_secret,
        tracing=tracing or [],
    )
    if env:
        container["env"] = env
    env_from = _env_from(workload, secret_names, database_secret)
    if env_from:
        container["envFrom"] = env_from
    resources = _resources(workload)
    if resources:
        container["resources"] = resources
    return container


def render_deployment(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    spec: CleoTenantSpec,
    config_checksum: str,
    secret_names: Sequence[str] = (),
    database_secret: str | None = None,
    keyring_secret: str | None = None,
    pooler_secret: str | None = None,
    image: str | None = None,
    tracing: WorkloadTracing | None = None,
) -> KubeObject | None:
    """The CleoAI Deployment; None without spec.workload.

    `secret_names` are the tenant's unsealed Secrets and `database_secret` the Secret with
    the database connection, each passed to the container as environment (``envFrom``).
    `keyring_secret`, the tenant's keyring, is mounted read-only at `KEYRING_MOUNT_PATH`;
    the database Secret's ``ca.crt`` (the site's CA, when it has one) at ``CA_PATH``.
    `config_checksum` (see `config_checksum`) rolls the pods when any of them changes.
    `pooler_secret`, the tenant's pooler's Secret: the pods go through the pooler.
    `image`, when given, runs instead of spec.workload.image (the image last migrated).
    `tracing`: the pods send traces there (`tracing_env`).
    """
    workload = spec.workload
    if workload is None:
        return None
    labels = workload_pod_labels(tenant)
    if pooler_secret is not None:
        labels = sorted_map({**labels, DATABASE_ROUTE_LABEL: POOLER_ROUTE})
    deployment_spec: DeploymentSpec = {
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "selector": {"matchLabels": workload_selector(tenant)},
        # A new pod must be ready before an old one goes: no capacity lost while rolling.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {CONFIG_CHECKSUM_ANNOTATION: config_checksum},
            },
            "spec": {
                "serviceAccountName": WORKLOAD_NAME,
                "automountServiceAccountToken": False,
                "securityContext": restricted_pod_security(RUN_AS_ID),
                "containers": [
                    _container(
                        workload,
                        secret_names,
                        database_secret,
                        keyring_secret,
                        pooler_secret=pooler_secret,
                        image=image,
                        tracing=(
                            tracing_env(tracing, tenant=tenant, namespace=namespace)
                            if tracing is not None
                            else None
                        ),
                    )
                ],
                "volumes": _volumes(keyring_secret, database_secret, pooler_secret),
            },
        },
    }
    if not spec.autoscaling.enabled:
        deployment_spec["replicas"] = 1 if workload.replicas is None else workload.replicas
    obj: Deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": workload_metadata(tenant=tenant, namespace=namespace, owner=owner),
        "spec": deployment_spec,
    }
    return as_object(obj)


def render_service(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The ClusterIP Service in front of CleoAI (port 80, named http); None without a workload."""
    if spec.workload is None:
        return None
    obj: Service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": workload_metadata(tenant=tenant, namespace=namespace, owner=owner),
        "spec": {
            "type": "ClusterIP",
            "selector": workload_selector(tenant),
            "ports": [
                {
                    "name": HTTP_PORT_NAME,
                    "protocol": "TCP",
                    "port": SERVICE_PORT,
                    "targetPort": spec.workload.port,
                }
            ],
        },
    }
    return as_object(obj)
