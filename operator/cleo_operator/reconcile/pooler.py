"""The tenant's PgBouncer pool as a part of the tenant reconcile (`PoolerPart`).

It runs after the database part, in the same reconcile: the database part has converged
the role and written the credentials Secret (a rotation included), so the pooler renders
its configuration from the password the role has *now*, and a rotation rolls the pooler
in the same reconcile that made it (the configuration's hash is on the pod template). The
workload does not roll for it: it logs in to the pooler with a client password of the
pooler's own, kept in the pooler's Secret with the pooler's TLS key and certificate
(kept while usable, the next one staged ahead, `crypto.pooler_tls`), and its checksum
takes only what it uses (`pooler_client_fingerprint`, and of the database Secret only the
role's and database's names, `_route`). It reaches the pooler at the Service's fully
qualified name and verifies its certificate (``verify-full``, `render.pooler`).

What it reads, and why from there: the site's connection facts from the operator's own
site configuration (never from the tenant-writable credentials Secret, whose host or TLS
settings a tenant admin could edit), the password from the credentials Secret after the
operator's own checks (`read_stored_password`: an edited password does not count).

**When the workload goes through the pooler.** Only once the pooler has an available
pod: the workload's environment (``DATABASE_URL``, ``PGHOST``, ``PGPORT``, ``PGSSLMODE``,
``PGSSLROOTCERT`` and the pooler's certificate mounted) and its NetworkPolicy route switch
together (`PartResult.pooler_secret`), so that turning
the pooler on never sends the pods to a Service without endpoints. The database Secret
itself stays direct: migration and backup Jobs connect to the site with it.

**PoolerReady.** True only when the pooler's Deployment runs the current configuration on
every replica (the hash of the template, the Deployment's observed generation, updated and
available replicas) *and* a real login through the Service as the tenant's role runs
``SELECT 1`` (`data.pooler`), at the Service's cluster IP, never a DNS name (see
`service_address`), over TLS pinned to the pooler's own certificate, and only once the
Service is provably the operator's: a pod whose
port answers but whose password is stale, or that cannot reach the site, is not a pool.
The login runs from the operator's pod, so the part adds one NetworkPolicy that admits
the operator's pods to the pooler's port; the check waits at most
`PoolerSettings.check_timeout_seconds` (then it cancels; a pool held by the workload is
``PoolerBusy``), in a lane of its own, never in the reconcile's worker thread. The
reconcile's wait is measured from when the check starts to run: one still queued behind
other tenants' checks is ``CheckPending`` "queued" (no login attempted, no hop blamed). The
last check's outcome is kept per namespace (`_Outcome`) and reported, with its time, while
a newer check is pending, so a slow but working pooler is not held False by checks that
end after their reconcile gave up. A failed check's reason names the hop (`data.pooler`:
``PoolerUnreachable``, ``AuthenticationFailed``, ``PoolerServerLoginFailed``,
``PoolerAuthMethodRefused``, ``PoolerBusy``). While workload pods of an operator before
client TLS run, the condition is ``True PlainClientsAllowed``, not ``Serving``.

**The workload's pods** are those controlled, by uid, by a ReplicaSet that the operator's
workload Deployment controls, by uid (`PoolerPart._workload_pods`): the workload's labels
are not reserved, so a look-alike pod of a tenant admin's never opens the pooler to plain
clients nor holds its switch-off. A pod uses the pooler by structural reference only
(`_uses_pooler`).

**The client credential** is kept across scheduled rotations, and replaced on an explicit
rotation request and, once inherited on upgrade, at the next rotation
(`_client_credential`); the pooler rolls onto it first, the workload once it has.

**Switching it off**: the workload goes back to the site directly in the same reconcile;
what the part made (only objects that carry the operator's labels for this tenant, found
live, not from status) is deleted once nothing of the workload uses the pooler: its
Deployment's template does not, its rollout is done, and no live pod of it (Terminating
ones included, which the Deployment's status does not count) reads the pooler's Secret or
host; then the condition goes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import functools
import hashlib
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from cleo_operator.api.objects import KubeObject
from cleo_operator.crypto.pooler_tls import PoolerTls, TlsState, tls_state
from cleo_operator.data.errors import DataError, UnknownSite
from cleo_operator.data.pooler import check_pooler_login
from cleo_operator.data.scram import is_operator_password
from cleo_operator.data.sites import SiteConfig
from cleo_operator.data.tenant_db import tenant_database_name, tenant_role_name
from cleo_operator.failover.errors import FailoverError
from cleo_operator.failover.tenant import database_site
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import (
    DEPLOYMENT,
    NETWORK_POLICY,
    PDB,
    POD,
    REPLICA_SET,
    SECRET,
    SERVICE,
    Kind,
)
from cleo_operator.kube.rollout import rollout_of
from cleo_operator.kube.secrets import secret_value
from cleo_operator.reconcile.database_passwords import new_password
from cleo_operator.reconcile.database_secret import (
    CREDENTIALS_SECRET,
    DATABASE_FINGERPRINT,
    read_stored_password,
)
from cleo_operator.reconcile.status import Observation, clip
from cleo_operator.reconcile.tenant_databases import TenantDatabases
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext
from cleo_operator.render.child import (
    WORKLOAD_NAME,
    child_metadata,
    sorted_map,
    workload_selector,
)
from cleo_operator.render.meta import TENANT_LABEL, labels_of, managed_by_operator
from cleo_operator.render.network import NAMESPACE_NAME_LABEL
from cleo_operator.render.pooler import (
    CLIENT_CA_KEY,
    CLIENT_PASSWORD_KEY,
    CLIENT_ROTATION_ANNOTATION,
    CLIENT_URL_KEY,
    DATABASE_ROUTE_LABEL,
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_POOLER_IMAGE,
    NEXT_TLS_CERT,
    NEXT_TLS_KEY,
    POOLER_HASH_ANNOTATION,
    POOLER_NAME,
    POOLER_PORT,
    POOLER_ROUTE,
    SERVICE_PORT,
    TLS_CERT,
    TLS_KEY,
    USERLIST_KEY,
    PoolerConfigError,
    PoolerImage,
    PoolerTarget,
    pooler_client_fingerprint,
    pooler_selector,
    pooler_server_host,
    render_pooler,
    userlist_password,
)

__all__ = [
    "CHECK_POLICY",
    "CONDITION_TYPE",
    "DEFAULT_OPERATOR_POD_LABELS",
    "IMAGE_ENV",
    "IMAGE_PULL_POLICY_ENV",
    "PoolerCheck",
    "PoolerPart",
    "PoolerSettings",
    "observe_rollout",
    "pooler_server_host",
    "pooler_target",
    "render_check_policy",
    "routes_workload",
    "service_address",
    "verified_service",
]

log = logging.getLogger(__name__)

CONDITION_TYPE: Final = "PoolerReady"
IMAGE_ENV: Final = "CLEO_POOLER_IMAGE"
IMAGE_PULL_POLICY_ENV: Final = "CLEO_POOLER_IMAGE_PULL_POLICY"
PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
OPERATOR_POD_LABELS_ENV: Final = "CLEO_OPERATOR_POD_LABELS"
CLUSTER_DOMAIN_ENV: Final = "CLEO_CLUSTER_DOMAIN"
_DOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEFAULT_OPERATOR_POD_LABELS: Final[Mapping[str, str]] = {"app.kubernetes.io/name": "cleo-operator"}
"""The operator's own pods' labels (the chart's selector labels), when not configured."""
CHECK_POLICY: Final = "cleo-allow-pooler-check"
"""The NetworkPolicy that lets the operator's own login check reach the pooler's port."""
_OWNED_KINDS: Final[tuple[Kind, ...]] = (PDB, SERVICE, DEPLOYMENT, SECRET)

PoolerCheck = Callable[..., None]
"""`data.pooler.check_pooler_login`'s shape (host, port, dbname, user, password,
timeout_seconds); raises a `DataError` when the login through the pooler fails."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolerSettings:
    """How the operator runs tenants' poolers (from its environment; the chart's ``pooler``)."""

    image: PoolerImage = dataclasses.field(default_factory=PoolerImage)
    """The PgBouncer image and its pull policy."""
    check_timeout_seconds: int = 2
    """Longest the login check through a pooler waits for its answer (then it cancels)."""
    check_grace_seconds: float = 1.5
    """How much longer than that the reconcile waits for the check's lane (the cancel, and
    cutting an answerer that ignores it); after it, the check is reported pending."""
    operator_pod_labels: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_OPERATOR_POD_LABELS)
    )
    """Labels of the operator's own pods: only they may reach a pooler's port (`CHECK_POLICY`),
    not every pod of the operator's namespace."""
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    """The cluster's DNS domain (`CLUSTER_DOMAIN_ENV`): the workload's host for the pooler is
    the Service's fully qualified name under it, and the pooler's certificate names it."""
    check_lane_width: int = 4
    """Threads that run login checks, for all tenants (one check per pooler at a time)."""
    rolling_requeue_seconds: float = 5.0
    """Look again this soon while the pooler rolls out."""
    failed_requeue_seconds: float = 10.0
    """Look again this soon after a failed login check."""
    check_outcome_max_age_seconds: float = 120.0
    """A check's outcome is reported (with its time) while a newer one is still queued or
    running, for this long after it ended."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> PoolerSettings:
        """``$CLEO_POOLER_IMAGE`` and ``$CLEO_POOLER_IMAGE_PULL_POLICY`` (the chart's
        ``pooler``); unset, `DEFAULT_POOLER_IMAGE` and Kubernetes' own pull policy."""
        env = os.environ if environ is None else environ
        image = env.get(IMAGE_ENV, "").strip() or DEFAULT_POOLER_IMAGE
        if any(c.isspace() for c in image):
            raise ValueError(f"{IMAGE_ENV}: {image!r} is not an image reference (no spaces)")
        policy = env.get(IMAGE_PULL_POLICY_ENV, "").strip() or None
        if policy not in (None, *PULL_POLICIES):
            raise ValueError(
                f"{IMAGE_PULL_POLICY_ENV}: {policy!r} is not one of {', '.join(PULL_POLICIES)}"
            )
        labels = _parse_labels(env.get(OPERATOR_POD_LABELS_ENV, ""))  # empty: the default
        domain = env.get(CLUSTER_DOMAIN_ENV, "").strip().rstrip(".") or DEFAULT_CLUSTER_DOMAIN
        if not _DOMAIN.match(domain):
            raise ValueError(f"{CLUSTER_DOMAIN_ENV}: {domain!r} is not a DNS domain")
        return cls(
            image=PoolerImage(image=image, pull_policy=policy),
            operator_pod_labels=labels or dict(DEFAULT_OPERATOR_POD_LABELS),
            cluster_domain=domain,
        )


_LABEL_PART: Final = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _parse_labels(text: str) -> dict[str, str]:
    """``key=value,key=value`` (`OPERATOR_POD_LABELS_ENV`); a bad pair names the variable."""
    labels: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not _LABEL_PART.match(key) or not _LABEL_PART.match(value):
            raise ValueError(
                f"{OPERATOR_POD_LABELS_ENV}: {pair!r} is not a label key=value "
                "(comma-separated pairs, the operator pods' own labels)"
            )
        labels[key] = value
    return labels


def pooler_target(
    site: SiteConfig,
    *,
    tenant: str,
    operator_namespace: str | None = None,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> PoolerTarget:
    """Where `tenant`'s pooler connects: its database on `site`, TLS as the site says, at
    the host as the operator's pod would reach it (`pooler_server_host`)."""
    return PoolerTarget(
        host=pooler_server_host(
            site, operator_namespace=operator_namespace, cluster_domain=cluster_domain
        ),
        port=site.port,
        dbname=tenant_database_name(tenant),
        user=tenant_role_name(tenant),
        sslmode=site.sslmode,
        ca_pem=site.ca_pem if site.verifies_server else None,
        verifies_server=site.verifies_server,
    )


def routes_workload(deployment: KubeObject | None) -> bool:
    """Whether the workload may go through the pooler: it has an available pod."""
    return deployment is not None and rollout_of(deployment).available >= 1


def observe_rollout(
    deployment: KubeObject | None, *, config_hash: str, replicas: int
) -> Observation | None:
    """Why the pooler does not run `config_hash` on all `replicas` yet; None when it does."""
    if deployment is None:
        return Observation("False", "Creating", "the pooler's Deployment is being created")
    spec = deployment.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    running = (template.get("annotations") or {}).get(POOLER_HASH_ANNOTATION)
    if running != config_hash:
        return Observation(
            "False",
            "Rolling",
            "the pooler is being rolled to a new configuration (password, site or pool "
            "settings changed)",
        )
    rollout = rollout_of(deployment)
    if not rollout.seen:
        return Observation("False", "Rolling", "the pooler's Deployment has not seen its spec yet")
    updated, available, total = rollout.updated, rollout.available, rollout.total
    if rollout.short_of(replicas):
        return Observation(
            "False",
            "Rolling" if total > replicas or updated < replicas else "Unavailable",
            f"{min(updated, available)} of {replicas} pooler pods of the current configuration "
            "are available",
        )
    return None


def _uses_pooler(pod_spec: object) -> bool:
    """Whether a pod (template) spec reads the pooler, by its structural references: a
    ``secretKeyRef`` or ``envFrom`` of the pooler's Secret, a volume of it (projected ones
    included), or ``PGHOST`` naming the pooler's Service (its short or qualified name).
    Never a substring anywhere in the spec: a user's value that mentions the name is none.
    """
    spec = pod_spec if isinstance(pod_spec, Mapping) else {}
    for volume in _maps(spec.get("volumes")):
        secret = volume.get("secret")
        if isinstance(secret, Mapping) and secret.get("secretName") == POOLER_NAME:
            return True
        projected = volume.get("projected")
        sources = projected.get("sources") if isinstance(projected, Mapping) else None
        for source in _maps(sources):
            named = source.get("secret")
            if isinstance(named, Mapping) and named.get("name") == POOLER_NAME:
                return True
    containers = [*_maps(spec.get("initContainers")), *_maps(spec.get("containers"))]
    for container in containers:
        for source in _maps(container.get("envFrom")):
            ref = source.get("secretRef")
            if isinstance(ref, Mapping) and ref.get("name") == POOLER_NAME:
                return True
        for env in _maps(container.get("env")):
            value_from = env.get("valueFrom")
            ref = value_from.get("secretKeyRef") if isinstance(value_from, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name") == POOLER_NAME:
                return True
            value = env.get("value")
            if env.get("name") == "PGHOST" and isinstance(value, str) and _names_pooler(value):
                return True
    return False


def _names_pooler(host: str) -> bool:
    """Whether `host` is the pooler's Service: its short name or a qualified one."""
    return host == POOLER_NAME or host.startswith(POOLER_NAME + ".")


def _maps(items: object) -> list[Mapping[str, Any]]:
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _plain_clients(pods: Iterable[KubeObject]) -> int:
    """How many live workload pods go to the pooler in the clear: ones made by an operator
    before client TLS (``PGHOST=cleo-pooler``, ``PGSSLMODE=disable`` as literal values).
    The pooler lets such clients in (``client_tls_sslmode=allow``) until they are gone, so
    that the upgrade's roll refuses no connection; then it requires TLS again (a roll).

    `pods` must be the workload's own (`PoolerPart._workload_pods`: controlled by the
    operator's Deployment's ReplicaSets, by uid): a pod with the workload's labels alone is
    anyone's, and would hold the pooler open to plain clients."""
    found = 0
    for pod in pods:
        for container in _maps((pod.get("spec") or {}).get("containers")):
            env = {str(e.get("name")): e.get("value") for e in _maps(container.get("env"))}
            if env.get("PGHOST") == POOLER_NAME and env.get("PGSSLMODE") == "disable":
                found += 1
                break
    return found


def _client_credential(
    live_secret: KubeObject | None, *, user: str, request: str | None, rotated_at: str
) -> tuple[str, str]:
    """The workload's client password to the pooler and what it answers to
    (`CLIENT_ROTATION_ANNOTATION`, recorded on the pooler's Secret).

    Kept across scheduled rotations of the role's password (the workload does not roll for
    them), but replaced:

    - when the live Secret holds none of the operator's form;
    - on an explicit rotation request (`request`, the last one the database part handled,
      differs from the one recorded): a request follows a suspected leak of the workload's
      ``DATABASE_URL``/``PGPASSWORD``, which are this credential, not the role's password;
    - when it was inherited on upgrade from an operator before the client credential (the
      auth file's password, which was the role's then): at the role's next rotation.

    A Secret of the previous version (a client credential, no record) answers to the
    request handled now: the upgrade rotates nothing by itself.
    """
    own = secret_value(live_secret, CLIENT_PASSWORD_KEY)
    inherited = (
        None if own else userlist_password(secret_value(live_secret, USERLIST_KEY), user=user)
    )
    kept = own or inherited
    recorded = ((live_secret or {}).get("metadata") or {}).get("annotations") or {}
    record = recorded.get(CLIENT_ROTATION_ANNOTATION)
    if not isinstance(record, str) or not record:
        record = f"inherited:{rotated_at}" if inherited else f"request:{request or ''}"
    kind, _, value = record.partition(":")
    due = (
        (kind == "inherited" and value != rotated_at)
        or (kind == "request" and bool(request) and value != request)
        or kind not in ("inherited", "request")
    )
    if kept and is_operator_password(kept) and not due:
        return kept, record
    return new_password(), f"request:{request or ''}"


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`obj`'s controller owner reference, if any."""
    for owner in _maps((obj.get("metadata") or {}).get("ownerReferences")):
        if owner.get("controller") is True:
            return owner
    return None


def _workload_on_pooler(deployment: KubeObject | None, pods: Iterable[KubeObject]) -> str | None:
    """Why the workload may still use the pooler; None once nothing of it does.

    From live objects only: the Deployment's template (new pods would read the pooler's
    Secret), its rollout (pods of an older template may be about to go or come), and the
    workload's pods themselves, Terminating ones included (the Deployment's status does not
    count those, yet they run and hold pool connections until they are gone). `pods` are
    the workload's own (`PoolerPart._workload_pods`, by controller uid): a tenant admin's
    pod with the workload's labels and a mention of the pooler holds nothing.
    """
    if deployment is not None:
        spec = deployment.get("spec") or {}
        if _uses_pooler((spec.get("template") or {}).get("spec")):
            return (
                "the workload's template still goes through the pooler; it is kept until it rolls"
            )
        if rollout_of(deployment).old_pods_left:
            return (
                "pods of the workload's previous template may still use the pooler; it is "
                "kept until they are gone"
            )
    on_pooler = sorted(
        str((pod.get("metadata") or {}).get("name"))
        for pod in pods
        if _uses_pooler(pod.get("spec")) or labels_of(pod).get(DATABASE_ROUTE_LABEL) == POOLER_ROUTE
    )
    if on_pooler:
        return (
            f"{len(on_pooler)} pod(s) of the workload still go through the pooler "
            f"({', '.join(on_pooler[:3])}); it is kept until they are gone"
        )
    return None


def _client_fingerprint(secret: KubeObject | None) -> str:
    """The workload's checksum input from the pooler's Secret: its URL and credential only
    (`pooler_client_fingerprint`), never the role's password; "" when it has none."""
    values = {key: secret_value(secret, key) for key in (CLIENT_PASSWORD_KEY, CLIENT_URL_KEY)}
    if not all(values.values()):
        return ""
    return pooler_client_fingerprint({key: str(value) for key, value in values.items()})


def _route(result: PartResult, ctx: TenantContext, secret: KubeObject | None) -> None:
    """Send the workload through the pooler, with a checksum of what it then reads.

    The pooled workload reads, from the database Secret, only the role's and database's
    names (``PGUSER``, ``PGDATABASE``: the tenant's, never changing); `pooler_env` overrides
    the rest (the password, host, TLS), so this part's entry replaces the database part's
    (parts contribute in order) and a rotation of the role's password, which changes the
    database Secret, never rolls the workload: only the pooler, whose configuration holds it.
    """
    result.pooler_secret = POOLER_NAME
    result.fingerprints["pooler"] = _client_fingerprint(secret)
    names = f"{tenant_role_name(ctx.name)}\n{tenant_database_name(ctx.name)}"
    result.fingerprints[DATABASE_FINGERPRINT] = hashlib.sha256(names.encode()).hexdigest()[:32]


def _had_condition(conditions: Iterable[object] | None) -> bool:
    return any(
        isinstance(item, Mapping) and item.get("type") == CONDITION_TYPE
        for item in conditions or []
    )


def render_check_policy(
    ctx: TenantContext,
    *,
    operator_namespace: str,
    operator_pod_labels: Mapping[str, str] = DEFAULT_OPERATOR_POD_LABELS,
) -> KubeObject:
    """`CHECK_POLICY`: the operator's pods may reach the pooler's port, nothing else.

    By the namespace's name label, which the API server sets and nobody can forge, and the
    operator pods' own labels, so that other pods of its namespace (backup runners) get
    nothing; the pooler's pods are selected by labels the tenant-protection policy keeps
    tenant admins from putting on pods of their own. No labels would select every pod of
    the operator's namespace: refused.
    """
    if not operator_pod_labels:
        raise ValueError(
            "the operator pods' labels are empty: the pooler check policy would admit every "
            "pod of the operator's namespace"
        )
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": pooler_selector(ctx.name)},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}
                        },
                        "podSelector": {"matchLabels": sorted_map(operator_pod_labels)},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": POOLER_PORT}],
            }
        ],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(
            name=CHECK_POLICY,
            namespace=ctx.namespace,
            tenant=ctx.name,
            owner=ctx.owner,
            component="network",
        ),
        "spec": spec,
    }


def service_address(service: KubeObject) -> tuple[str, int]:
    """The pooler's address from its Service (`verified_service`): its cluster IP.

    Never a DNS name: ``cleo-pooler.<ns>.svc`` is relative, and with the cluster's
    ``ndots:5`` it is first tried under the search domains, where a name of namespace
    ``svc`` answers; whoever made that name would receive the tenant's login.
    """
    return str(service["spec"]["clusterIP"]), SERVICE_PORT


def verified_service(
    service: KubeObject | None, *, tenant: str, uid: str
) -> tuple[KubeObject | None, str]:
    """`service` when it is provably the operator's pooler Service of this tenant (its
    labels, an owner reference with the tenant's uid, a cluster IP); else None and why."""
    if service is None:
        return None, "the pooler's Service does not exist yet"
    owners = (service.get("metadata") or {}).get("ownerReferences") or []
    if (
        not managed_by_operator(service)
        or labels_of(service).get(TENANT_LABEL) != tenant
        or not any(isinstance(o, Mapping) and o.get("uid") == uid for o in owners)
    ):
        return None, (
            f"Service {POOLER_NAME} is not the operator's for this tenant (labels or owner): "
            "the login check does not go to it"
        )
    cluster_ip = str((service.get("spec") or {}).get("clusterIP") or "")
    try:
        ipaddress.ip_address(cluster_ip)
    except ValueError:
        return None, f"Service {POOLER_NAME} has no cluster IP yet"
    return service, ""


@dataclasses.dataclass(eq=False)
class _Check:
    """One login check of a namespace's pooler in the lane."""

    key: str
    """What it checks (address, credential, certificate), as a digest."""
    future: concurrent.futures.Future[None] = dataclasses.field(
        default_factory=concurrent.futures.Future
    )
    started: threading.Event = dataclasses.field(default_factory=threading.Event)
    started_at: float | None = None
    """When it started to run (monotonic); its wait is measured from then."""


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """How the last check of a namespace's pooler ended."""

    key: str
    ended: float
    """Monotonic."""
    error: DataError | None


class PoolerPart:
    """``spec.database.pooler`` as a `TenantPart`; after `DatabasePart` in ``parts=[...]``."""

    def __init__(
        self,
        kube: KubeClient,
        databases: TenantDatabases,
        *,
        operator_namespace: str,
        settings: PoolerSettings | None = None,
        check: PoolerCheck = check_pooler_login,
        address: Callable[[KubeObject], tuple[str, int]] = service_address,
    ) -> None:
        self.kube = kube
        self.databases = databases
        self.operator_namespace = operator_namespace
        self.settings = settings or PoolerSettings()
        self.check = check
        # Where the operator reaches a pooler, from its verified Service (`service_address`).
        self.address = address
        # Database work never runs in a reconcile's worker thread: the login runs in this
        # lane, one check per namespace at a time, and the reconcile waits only so long.
        self._lane = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.settings.check_lane_width, thread_name_prefix="pooler-check"
        )
        self._running: dict[str, _Check] = {}
        self._outcomes: dict[str, _Outcome] = {}
        self._running_lock = threading.RLock()

    def close(self) -> None:
        """Stop the check lane (a running check ends at its own deadline); called at the
        operator's shutdown (`TenantReconciler.close`, from Kopf's cleanup handler)."""
        self._lane.shutdown(wait=False, cancel_futures=True)
        log.info("the pooler's check lane is closed")

    def reconcile(self, ctx: TenantContext) -> PartResult:
        database = ctx.spec.database
        result = PartResult()
        if not (database.enabled and database.pooler.enabled):
            return self._switch_off(ctx, result)
        try:
            site_name = database_site(ctx.spec, ctx.annotations)
            site = self.databases.pools.site(site_name)
        except (FailoverError, UnknownSite) as exc:
            return self._not_ready(result, "SiteUnknown", str(exc), ctx, retry=False)
        secret = self.kube.get(SECRET, CREDENTIALS_SECRET, namespace=ctx.namespace)
        stored, why = read_stored_password(secret, tenant=ctx.name)
        if stored is None:
            return self._not_ready(
                result, "WaitingForCredentials", f"the pooler waits for the password: {why}", ctx
            )
        pooler = database.pooler
        target = pooler_target(
            site,
            tenant=ctx.name,
            operator_namespace=self.operator_namespace,
            cluster_domain=self.settings.cluster_domain,
        )
        # The workload's own credential to the pooler: kept from the live Secret (so that a
        # scheduled rotation of the role's password never changes the workload's URL), made
        # anew when there is none of the operator's form, and on an explicit rotation
        # request (`_client_credential`).
        live_secret = self._ours(ctx, SECRET, POOLER_NAME)
        # Credentials only from a Secret this tenant (by uid) owns: one a deleted tenant of
        # the same name left behind (Retain cuts it loose) holds what its admins could read
        # (the client password, the TLS key); a re-created tenant gets new ones.
        owners = ((live_secret or {}).get("metadata") or {}).get("ownerReferences") or []
        owned = any(isinstance(o, Mapping) and o.get("uid") == ctx.uid for o in owners)
        credentials_from = live_secret if owned else None
        client_password, client_rotation = _client_credential(
            credentials_from,
            user=target.user,
            request=stored.rotation_request,
            rotated_at=stored.rotated_at.isoformat() if stored.rotated_at else "",
        )
        tls = self._tls(ctx, credentials_from)
        plain = _plain_clients(self._workload_pods(ctx))
        try:
            objects = render_pooler(
                tenant=ctx.name,
                namespace=ctx.namespace,
                owner=ctx.owner,
                pooler=pooler,
                target=target,
                password=stored.password,
                client_password=client_password,
                tls=tls.current,
                staged_tls=tls.staged,
                trusted_certs=tls.bundle,
                image=self.settings.image,
                cluster_domain=self.settings.cluster_domain,
                plain_clients=plain > 0,
                client_rotation=client_rotation,
            )
        except PoolerConfigError as exc:
            return self._not_ready(result, exc.reason, exc.message, ctx, retry=False)
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        config_hash = deployment["spec"]["template"]["metadata"]["annotations"][
            POOLER_HASH_ANNOTATION
        ]
        result.objects = [
            render_check_policy(
                ctx,
                operator_namespace=self.operator_namespace,
                operator_pod_labels=self.settings.operator_pod_labels,
            ),
            *objects,
        ]
        if not any(o["kind"] == PDB.kind for o in objects):
            # Scaled to one replica: a budget keeping one pod up would block every drain,
            # and the tenant reconcile's pruning does not know a part's objects.
            self._delete_ours(ctx, PDB, POOLER_NAME, why="one replica needs no budget")
        live = self.kube.get(DEPLOYMENT, POOLER_NAME, namespace=ctx.namespace)
        rollout = observe_rollout(live, config_hash=config_hash, replicas=pooler.replicas)
        if routes_workload(live):
            # A new client credential (a rotation request) rolls the pooler first: the
            # workload's checksum takes it only once every pooler pod accepts it.
            _route(result, ctx, objects[0] if rollout is None else live_secret or objects[0])
        if rollout is not None:
            result.conditions[CONDITION_TYPE] = rollout
            result.requeue_after = self.settings.rolling_requeue_seconds
            return result
        service, why = verified_service(
            self.kube.get(SERVICE, POOLER_NAME, namespace=ctx.namespace),
            tenant=ctx.name,
            uid=ctx.uid,
        )
        if service is None:
            result.conditions[CONDITION_TYPE] = Observation("False", "ServiceNotVerified", why)
            result.requeue_after = self.settings.failed_requeue_seconds
            return result
        host, port = self.address(service)
        key = hashlib.sha256(
            json.dumps([host, port, target.dbname, client_password, tls.current.cert_pem]).encode()
        ).hexdigest()
        check = self._submit_check(
            ctx.namespace,
            key,
            functools.partial(
                self.check,
                host=host,
                port=port,
                dbname=target.dbname,
                user=target.user,
                password=client_password,
                timeout_seconds=self.settings.check_timeout_seconds,
                server_cert_pem=tls.current.cert_pem,
            ),
        )
        pending = self._wait_for(check)
        outcome = self._outcome(ctx.namespace, key)
        if outcome is None:
            pending = pending or (
                "the check that ended was of an earlier configuration (address, credential or "
                "certificate); the next look starts one of this one"
            )
            result.conditions[CONDITION_TYPE] = Observation("False", "CheckPending", pending)
            result.requeue_after = self.settings.failed_requeue_seconds
            return result
        when = ""
        if pending:
            # Not this reconcile's check: the last one that ended (the same address,
            # credential and certificate), with its time; a new one is on its way.
            ended = ctx.now - datetime.timedelta(seconds=time.monotonic() - outcome.ended)
            when = f" (the last check, at {ended.strftime('%Y-%m-%dT%H:%M:%SZ')}; {pending})"
        if outcome.error is not None:
            result.conditions[CONDITION_TYPE] = Observation(
                "False",
                outcome.error.reason,
                f"a login through the pooler's Service failed ({outcome.error.reason}); the "
                f"operator's log has the details{when}",
            )
            result.requeue_after = self.settings.failed_requeue_seconds
            return result
        serving = (
            f"a login through the pooler's Service succeeded as the tenant's role, to "
            f"database {target.dbname} on site {site_name} ({pooler.replicas} replicas of "
            f"the current configuration, {pooler.mode} pooling, at most {pooler.pool_size} "
            f"server connections each){when}"
        )
        if plain:
            # The upgrade's window: not "TLS required" while it lasts (docs boundary 2).
            result.conditions[CONDITION_TYPE] = Observation(
                "True",
                "PlainClientsAllowed",
                f"{serving}; {plain} workload pod(s) of an operator before client TLS still "
                "connect in the clear, so the pooler allows plain clients until they are gone "
                "(then it requires TLS again)",
            )
            result.requeue_after = self.settings.rolling_requeue_seconds
            return result
        result.conditions[CONDITION_TYPE] = Observation("True", "Serving", serving)
        if pending:
            result.requeue_after = self.settings.failed_requeue_seconds
        return result

    def _tls(self, ctx: TenantContext, live_secret: KubeObject | None) -> TlsState:
        """The pooler's client TLS: the live Secret's pairs while usable (no churn: a no-op
        reconcile writes nothing), the next one staged and trusted ahead of its use
        (`crypto.pooler_tls.tls_state`)."""

        def pair(key_name: str, cert_name: str) -> PoolerTls | None:
            key, cert = (secret_value(live_secret, k) for k in (key_name, cert_name))
            return PoolerTls(key_pem=key, cert_pem=cert) if key and cert else None

        return tls_state(
            current=pair(TLS_KEY, TLS_CERT),
            staged=pair(NEXT_TLS_KEY, NEXT_TLS_CERT),
            trusted=secret_value(live_secret, CLIENT_CA_KEY),
            service=POOLER_NAME,
            namespace=ctx.namespace,
            cluster_domain=self.settings.cluster_domain,
            now=ctx.now,
        )

    def _submit_check(self, namespace: str, key: str, call: Callable[[], None]) -> _Check:
        """The check of `namespace`'s pooler: the one still queued or running (one per
        namespace at a time, whatever it checks), else a new one in the lane."""
        with self._running_lock:
            running = self._running.get(namespace)
            if running is not None and not running.future.done():
                return running
            check = _Check(key=key)
            check.future = self._lane.submit(self._run, namespace, check, call)
            self._running[namespace] = check
            return check

    def _run(self, namespace: str, check: _Check, call: Callable[[], None]) -> None:
        """In the lane: run the check and keep its outcome (`_outcome`), however late."""
        check.started_at = time.monotonic()
        check.started.set()
        try:
            call()
        except DataError as exc:
            self._keep(namespace, check, exc)
            raise
        # Anything else is a fault of the check itself: no outcome, the reconcile sees it.
        self._keep(namespace, check, None)

    def _keep(self, namespace: str, check: _Check, error: DataError | None) -> None:
        with self._running_lock:
            self._outcomes[namespace] = _Outcome(key=check.key, ended=time.monotonic(), error=error)

    def _wait_for(self, check: _Check) -> str:
        """Wait for `check`, measured from when it started to run; "" once it has ended,
        else what it is doing (queued behind other tenants' checks, or running)."""
        wait = self.settings.check_timeout_seconds + self.settings.check_grace_seconds
        if not check.started.wait(timeout=wait):
            return (
                f"the login check is queued behind other pooler checks (not started within "
                f"{wait:g}s); no login was attempted yet"
            )
        left = (check.started_at or 0.0) + wait - time.monotonic()
        try:
            check.future.result(timeout=max(0.0, left))
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            return f"the login through the pooler's Service has not ended within {wait:g}s"
        except DataError:
            pass  # its outcome is kept
        return ""

    def _outcome(self, namespace: str, key: str) -> _Outcome | None:
        """The last ended check of `namespace`'s pooler with `key` (the same address,
        credential and certificate), if recent (`PoolerSettings.check_outcome_max_age_seconds`)."""
        with self._running_lock:
            outcome = self._outcomes.get(namespace)
        if outcome is None or outcome.key != key:
            return None
        if time.monotonic() - outcome.ended > self.settings.check_outcome_max_age_seconds:
            return None
        return outcome

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        """Delete: nothing to do (the tenant owns the objects; the collector removes them).

        Retain keeps the namespace and its workload, which goes through the pooler: the
        pooler's objects are cut loose from the tenant too (the tenant reconcile's list of
        children does not hold them), or the collector would delete the Service and the
        Secret the kept pods read.
        """
        if delete:
            return True
        for kind, name in self._owned():
            live = self.kube.get(kind, name, namespace=ctx.namespace)
            if live is None:
                continue
            owners = live["metadata"].get("ownerReferences") or []
            kept = [o for o in owners if o.get("uid") != ctx.uid]
            if kept != owners:
                self.kube.patch_merge(
                    kind, name, {"metadata": {"ownerReferences": kept}}, namespace=ctx.namespace
                )
        return True

    @staticmethod
    def _owned() -> list[tuple[Kind, str]]:
        return [*((k, POOLER_NAME) for k in _OWNED_KINDS), (NETWORK_POLICY, CHECK_POLICY)]

    def _not_ready(
        self,
        result: PartResult,
        reason: str,
        message: str,
        ctx: TenantContext,
        *,
        retry: bool = True,
    ) -> PartResult:
        result.conditions[CONDITION_TYPE] = Observation("False", reason, clip(message))
        if retry:
            result.requeue_after = self.settings.failed_requeue_seconds
        # What runs keeps running (and the workload keeps its route) until it can be
        # rendered again: the pods hold a configuration that worked.
        live = self.kube.get(DEPLOYMENT, POOLER_NAME, namespace=ctx.namespace)
        if routes_workload(live):
            _route(result, ctx, self._ours(ctx, SECRET, POOLER_NAME))
        return result

    def _switch_off(self, ctx: TenantContext, result: PartResult) -> PartResult:
        """Remove the pooler once nothing of the workload uses it any more.

        Decided from the live objects (those with the operator's labels for this tenant),
        never from status, which a lost write or a re-adopted tenant leaves without the
        condition. The workload goes back to the site in this same reconcile (its template
        no longer names the pooler), but its pods roll after: the pooler's Service and
        Secret stay until the workload's Deployment has rolled out a template that does not
        read them and no pod of the workload that does is left (`_workload_on_pooler`), or
        its old pods would lose their pool and a restarted one its ``secretKeyRef``.
        """
        ours = [(kind, name) for kind, name in self._owned() if self._ours(ctx, kind, name)]
        if not ours:
            if _had_condition(ctx.status.get("conditions")):
                result.remove_conditions.add(CONDITION_TYPE)
            return result
        waiting = _workload_on_pooler(
            self.kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=ctx.namespace),
            self._workload_pods(ctx),
        )
        if waiting is not None:
            result.conditions[CONDITION_TYPE] = Observation("False", "SwitchingOff", waiting)
            result.requeue_after = self.settings.rolling_requeue_seconds
            return result
        for kind, name in ours:
            self._delete_ours(ctx, kind, name, why="pooler switched off")
        result.remove_conditions.add(CONDITION_TYPE)
        return result

    def _workload_pods(self, ctx: TenantContext) -> list[KubeObject]:
        """The workload's live pods (Terminating ones included): those controlled, by uid,
        by a ReplicaSet that the operator's own workload Deployment controls, by uid.

        Not by labels: the workload's labels are not reserved, so any tenant admin can make
        a pod that carries them (and the pooler's name in its env), which would hold the
        pooler open to plain clients or keep it from being switched off."""
        deployment = self._ours(ctx, DEPLOYMENT, WORKLOAD_NAME)
        if deployment is None:
            return []
        deployment_uid = (deployment.get("metadata") or {}).get("uid")
        selector = ",".join(f"{k}={v}" for k, v in workload_selector(ctx.name).items())
        pods = self.kube.list(POD, namespace=ctx.namespace, label_selector=selector)
        controlled: dict[tuple[str, str], bool] = {}
        found: list[KubeObject] = []
        for pod in pods:
            owner = _controller(pod)
            if owner is None or owner.get("kind") != "ReplicaSet":
                continue
            key = (str(owner.get("name") or ""), str(owner.get("uid") or ""))
            if key not in controlled:
                replica_set = self.kube.get(REPLICA_SET, key[0], namespace=ctx.namespace)
                rs_owner = _controller(replica_set) if replica_set is not None else None
                controlled[key] = (
                    replica_set is not None
                    and bool(key[1])
                    and (replica_set.get("metadata") or {}).get("uid") == key[1]
                    and rs_owner is not None
                    and rs_owner.get("kind") == "Deployment"
                    and bool(deployment_uid)
                    and rs_owner.get("uid") == deployment_uid
                )
            if controlled[key]:
                found.append(pod)
        return found

    def _ours(self, ctx: TenantContext, kind: Kind, name: str) -> KubeObject | None:
        """`kind` `name` if it carries the operator's labels for this tenant."""
        live = self.kube.get(kind, name, namespace=ctx.namespace)
        if live is None or not managed_by_operator(live):
            return None
        return live if labels_of(live).get(TENANT_LABEL) == ctx.name else None

    def _delete_ours(self, ctx: TenantContext, kind: Kind, name: str, *, why: str) -> None:
        """Delete `kind` `name` if it carries the operator's labels for this tenant."""
        if self._ours(ctx, kind, name) is None:
            return
        self.kube.delete(kind, name, namespace=ctx.namespace)
        log.info("tenant %s: deleted %s %s (%s)", ctx.name, kind.kind, name, why)
