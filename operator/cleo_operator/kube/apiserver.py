"""Where the API server is, as a backup runner's NetworkPolicy must name it.

The runner pods write their CleoBackup's status, so their egress must reach the API server,
and only it (never 0.0.0.0/0). A NetworkPolicy sees the API server's endpoint addresses
(most network plugins apply policies after the `kubernetes` Service's ClusterIP has been
translated), so the operator reads them at start from the EndpointSlices of the
`kubernetes` Service in `default`, and adds the ClusterIP (`KUBERNETES_SERVICE_HOST`) for
plugins that apply them before. Reading the EndpointSlices needs `list` on
`discovery.k8s.io/endpointslices` in `default`; without it (or outside a cluster) only the
ClusterIP is known, which is logged, and `CLEO_BACKUP_API_SERVER_CIDRS` names the addresses
instead (docs/backups.md).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Final

from cleo_operator.kube.client import KubeClient, KubeError

__all__ = ["API_SERVER_SERVICE_SELECTOR", "find_api_server_cidrs"]

log = logging.getLogger(__name__)

API_SERVER_SERVICE_SELECTOR: Final = "kubernetes.io/service-name=kubernetes"
ENDPOINT_SLICES_PATH: Final = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def _one_address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(ipaddress.ip_address(text.strip())))
    except ValueError:
        return None


def find_api_server_cidrs(
    kube: KubeClient, environ: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """The API server's addresses as one-address ranges (`/32`, `/128`); empty if unknown."""
    found: set[str] = set()
    cluster_ip = _one_address(environ.get("KUBERNETES_SERVICE_HOST", ""))
    if cluster_ip is not None:
        found.add(cluster_ip)
    try:
        result = kube.request(
            "GET",
            ENDPOINT_SLICES_PATH,
            query={"labelSelector": API_SERVER_SERVICE_SELECTOR},
            what="list the kubernetes Service's EndpointSlices",
        )
    except KubeError as exc:
        log.warning(
            "cannot read the API server's endpoints (%s %s); backup runners may reach only %s: "
            "set CLEO_BACKUP_API_SERVER_CIDRS to the API server's addresses",
            exc.status,
            exc.reason,
            ", ".join(sorted(found)) or "nothing",
        )
        return tuple(sorted(found))
    for item in (result or {}).get("items") or []:
        for endpoint in item.get("endpoints") or []:
            for address in endpoint.get("addresses") or []:
                one = _one_address(str(address))
                if one is not None:
                    found.add(one)
    return tuple(sorted(found))
