"""Where the API server is, as a backup runner's NetworkPolicy must name it.

The runner pods write their CleoBackup's status, so their egress must reach the API server,
and only it (never 0.0.0.0/0). Without `CLEO_BACKUP_API_SERVER_CIDRS`, the operator takes
the addresses it talks to itself: in a pod, the `kubernetes` Service's ClusterIP
(`KUBERNETES_SERVICE_HOST`, which is also the host of its in-cluster connection); outside
one, the host of its kubeconfig's server when that is an IP address. No API call is made,
so no permission is needed.

Many network plugins apply NetworkPolicies after the ClusterIP has been translated to the
API server's endpoints, and then the ClusterIP alone does not let the runner through: set
`CLEO_BACKUP_API_SERVER_CIDRS` to the endpoints' addresses there (docs/backups.md). Reading
them from the `kubernetes` EndpointSlice in `default` would need a read right in that
namespace, which the operator does not hold.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from cleo_operator.kube.client import KubeClient

__all__ = ["find_api_server_cidrs"]

log = logging.getLogger(__name__)


def _one_address(text: str | None) -> str | None:
    try:
        return str(ipaddress.ip_network(ipaddress.ip_address((text or "").strip())))
    except ValueError:
        return None


def find_api_server_cidrs(
    kube: KubeClient, environ: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """The API server's addresses this process knows, as one-address ranges; may be empty."""
    found = {
        address
        for address in (
            _one_address(environ.get("KUBERNETES_SERVICE_HOST")),
            _one_address(urlsplit(kube.host).hostname),
        )
        if address is not None
    }
    log.info(
        "backup runners may reach the API server at %s (the addresses this operator uses); "
        "where NetworkPolicies see the API server's endpoints instead, set "
        "CLEO_BACKUP_API_SERVER_CIDRS",
        ", ".join(sorted(found)) or "no known address",
    )
    return tuple(sorted(found))
