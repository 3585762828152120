"""The tenant's pooler in a failover: the writers come back only through a pooler that
points at the new primary.

Why: with ``spec.database.pooler`` the workload's pods reach the database through the
tenant's PgBouncer, not with the credentials Secret the repoint step writes. The pooler's
configuration names the primary's site; the tenant reconcile renders it again when the
primary-site annotation moves and rolls it (the configuration's hash is on the pod
template). Until every pooler pod runs that configuration, the pooler opens its server
connections to the old primary. The fence (``failover.fencing``) ends those sessions and
refuses new ones where the old primary answers: a real pgbouncer's open server
connections get no write past it. But a primary the failover could not reach is fenced
only when it answers again, and a pooler that still reaches it would carry the released
writers' writes there: two primaries. So the rollout step lets the writers go only once
the pooler runs the new site's configuration on all its pods (`pooler_route`); until
then the workload stays at zero, and the fence covers the pooler too.

The pooler is judged from what runs, not from what the tenant reconcile meant to run: the
``[databases]`` entry of the pooler Secret names the new site's host and port, the pod
template carries the hash of exactly that Secret (an HMAC keyed with the server login's
password in its database entry, as the renderer computes it), and the Deployment's
controller reports every replica updated and available.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final

from cleo_operator.data.sites import SiteConfig
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, SECRET
from cleo_operator.kube.rollout import rollout_of, whole
from cleo_operator.render.pooler import (
    DEFAULT_CLUSTER_DOMAIN,
    INI_KEY,
    POOLER_HASH_ANNOTATION,
    POOLER_NAME,
    pooler_config_hash,
    pooler_server_host,
)

__all__ = ["PoolerRoute", "points_to", "pooler_route", "pooler_server"]

_SERVER_PASSWORD: Final = re.compile(
    r"^\S+ = host=\S+ .* password=(?P<password>\S+)$", re.MULTILINE
)
_SERVER: Final = re.compile(r"^\S+ = host=(?P<host>\S+) port=(?P<port>\d+) ", re.MULTILINE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolerRoute:
    """Whether the tenant's pooler runs the new primary's configuration."""

    exists: bool
    """The tenant has a pooler Deployment."""
    ready: bool
    """Every pooler pod runs the configuration of the site asked about (or no pooler)."""
    message: str
    """For people."""


def points_to(server: tuple[str, int], host: str, port: int) -> bool:
    """Whether the rendered server is exactly `host`:`port`: the host as the pooler must
    write it (`render.pooler.pooler_server_host`, computed by the caller), nothing looser
    (a host ``pg`` must not match ``pg.<another namespace>.svc...``)."""
    return server == (host, port)


def pooler_server(ini: str) -> tuple[str, int] | None:
    """The server (host, port) of the rendered ``pgbouncer.ini``'s database entry."""
    found = _SERVER.search(ini.partition("[pgbouncer]")[0])
    return (found["host"], int(found["port"])) if found else None


def _decoded(secret: Mapping[str, Any] | None) -> dict[str, str] | None:
    try:
        return {
            key: base64.b64decode(value).decode()
            for key, value in ((secret or {}).get("data") or {}).items()
        }
    except (binascii.Error, UnicodeDecodeError, TypeError):
        return None


def _password(ini: str) -> str | None:
    """The server login's password of the rendered ``pgbouncer.ini`` (its database entry):
    the role's, which keys the configuration's hash (the auth file holds the clients')."""
    found = _SERVER_PASSWORD.search(ini.partition("[pgbouncer]")[0])
    return found["password"] if found else None


def pooler_route(
    kube: KubeClient,
    namespace: str,
    *,
    site: SiteConfig,
    operator_namespace: str | None = None,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> PoolerRoute:
    """Whether the pooler in `namespace` runs `site`'s configuration on all its pods.

    Reads only what the operator writes and tenant admins cannot (the pooler's Secret is a
    reserved name, its Deployment's status the controller's): the password that keys the
    hash comes from the pooler's own configuration, not from the tenant-writable credentials
    Secret, so an edit there can neither release the writers early nor be needed."""
    deployment = kube.get(DEPLOYMENT, POOLER_NAME, namespace=namespace)
    if deployment is None:
        return PoolerRoute(exists=False, ready=True, message="the tenant has no pooler")
    where = f"site {site.name!r} ({site.host}:{site.port})"
    values = _decoded(kube.get(SECRET, POOLER_NAME, namespace=namespace))
    server = pooler_server((values or {}).get(INI_KEY, ""))
    host = pooler_server_host(
        site, operator_namespace=operator_namespace, cluster_domain=cluster_domain
    )
    if values is None or server is None or not points_to(server, host, site.port):
        return PoolerRoute(
            exists=True,
            ready=False,
            message=f"the pooler's configuration does not point to {where} yet (the tenant "
            "reconcile renders it from the moved primary-site annotation)",
        )
    spec = deployment.get("spec") or {}
    template = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    password = _password(values.get(INI_KEY, ""))
    current = password is not None and template.get(POOLER_HASH_ANNOTATION) == pooler_config_hash(
        values, password=password
    )
    rollout = rollout_of(deployment)
    if not current or not rollout.seen:
        return PoolerRoute(
            exists=True,
            ready=False,
            message=f"the pooler's pods are not yet rolled to the configuration for {where}",
        )
    wanted = whole(spec.get("replicas", 1))
    if rollout.short_of(wanted):
        return PoolerRoute(
            exists=True,
            ready=False,
            message=f"{min(rollout.updated, rollout.available)} of {wanted} pooler pod(s) run the "
            f"configuration for {where}; older ones may still go to the old primary",
        )
    return PoolerRoute(
        exists=True, ready=True, message=f"the pooler's {wanted} pod(s) go to {where}"
    )
