"""IP ranges in CIDR notation, checked strictly wherever the API takes one.

Why a strict pattern and not CEL's ``isCIDR()``: that function needs Kubernetes 1.31 and the
CRDs support 1.30, so the CRD carries a pattern that accepts exactly what Python's
``ipaddress`` accepts (every IPv4 octet at most 255 with a prefix to /32, IPv6 without an
embedded IPv4 address with a prefix to /128), and pydantic checks the same with
``ipaddress``, so the API server and the operator agree on every range.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from cleo_operator.api.schema import CelRule, Extra, cel

__all__ = [
    "CIDR_PATTERN",
    "METADATA_OPENING",
    "METADATA_RANGES",
    "Cidr",
    "destination_metadata_problem",
    "endpoint_metadata_cel",
    "host_metadata_problem",
    "metadata_cel",
    "metadata_overlap",
    "metadata_rules",
]

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    (
        rf"({_H16}:){{7}}{_H16}",
        rf"({_H16}:){{1,7}}:",
        *(rf"({_H16}:){{1,{7 - n}}}(:{_H16}){{1,{n}}}" for n in range(1, 7)),
        rf":((:{_H16}){{1,7}}|:)",
    )
)
CIDR_PATTERN = (
    rf"^({_OCTET}(\.{_OCTET}){{3}}/(3[0-2]|[12]?[0-9])"
    rf"|({_IPV6})/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
)


def _check_cidr(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("must be an IP range in CIDR notation, e.g. 10.0.0.0/24") from None
    return text


Cidr = Annotated[
    str, Field(max_length=43), AfterValidator(_check_cidr), Extra({"pattern": CIDR_PATTERN})
]


METADATA_RANGES: Final = ("169.254.0.0/16", "::/16", "64::/16", "fd00:e00::/24")
"""Ranges no egress may open (they hand out a node's or the platform's credentials):
link-local IPv4, where every cloud's instance metadata service is (169.254.169.254,
GKE's 169.254.169.252); and the IPv6 blocks that hold AWS's IPv6 metadata address
(fd00:ec2::254 in fd00:e00::/24) or reach IPv4, so also the metadata address, through
IPv6 (IPv4-mapped ::ffff:0:0/96 in ::/16, NAT64's 64:ff9b::/96 and 64:ff9b:1::/48 in
64::/16). The IPv6 blocks are whole /16 and /24 blocks, reserved or unused by stores,
because egress ranges are at least /24 and the CRD's rule (without CEL's CIDR library,
see above) can only compare their leading hextets."""
METADATA_OPENING: Final = "169.254.169.254/32"
"""What ``instanceMetadata: true`` opens (and the only metadata range egress may repeat)."""

_METADATA_NETWORKS: Final = tuple(ipaddress.ip_network(r) for r in METADATA_RANGES)
_V4_SECOND_OCTET_FLOOR: Final = (0, 128, 192, 224, 240, 248, 252, 254)
"""For a 169.x range of prefix /8 to /15: the least second octet that reaches 169.254."""
_NUMERIC_LABEL: Final = re.compile(r"(?:^|\.)(?:0[xX][0-9A-Fa-f]*|[0-9]+)\.?$")
_DOTTED_QUAD: Final = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


def metadata_overlap(text: str) -> str | None:
    """The metadata range (of `METADATA_RANGES`) the CIDR `text` overlaps; None if none."""
    network = ipaddress.ip_network(text, strict=False)
    for metadata in _METADATA_NETWORKS:
        if network.version == metadata.version and network.overlaps(metadata):
            return str(metadata)
    return None


def metadata_cel(c: str) -> str:
    """A CEL expression: the CIDR string `c` (valid per `CIDR_PATTERN`, at least /8 or /24)
    overlaps a range of `METADATA_RANGES`; the same answer as `metadata_overlap`."""
    prefix = f"int({c}.split('/')[1])"
    octet = f"int({c}.split('.')[1])"
    floors = ", ".join(str(f) for f in _V4_SECOND_OCTET_FLOOR)
    v4 = (
        f"({c}.startsWith('169.') && ({prefix} >= 16 ? {octet} == 254 : "
        f"{prefix} >= 8 && {octet} >= [{floors}][{prefix} - 8]))"
    )
    v6 = f"{c}.matches('(?i)^(::|0{{1,4}}:|0{{0,2}}64:|fd00:0?e[0-9a-f]{{2}}:)')"
    return f"({c}.contains(':') ? {v6} : {v4})"


def host_metadata_problem(host: str) -> str | None:
    """Why an endpoint's `host` may reach a metadata service (None: it cannot by address).

    A host that ends in a number is an IPv4 address to URL parsers (``2852039166``,
    ``0xa9fea9fe``, ``169.254.43518`` are 169.254.169.254): it must then be written as a
    plain dotted quad, which is checked like an egress range.
    """
    bare = host.strip("[]")
    if ":" in bare:
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            return "is not an IPv6 address"
        overlap = metadata_overlap(f"{address}/128")
    else:
        if _NUMERIC_LABEL.search(bare) is None:
            return None
        if _DOTTED_QUAD.fullmatch(bare) is None:
            return (
                "is a number but not a dotted-quad IPv4 address (a.b.c.d); such a host can "
                "name an instance metadata address"
            )
        overlap = metadata_overlap(f"{bare}/32")
    if overlap is None:
        return None
    return f"is inside {overlap}, which holds the instance metadata service"


def endpoint_metadata_cel(endpoint: str) -> str:
    """A CEL expression: the URL `endpoint` has a host that fails `host_metadata_problem`.

    Regular expressions on the URL (its userinfo and port skipped), not CEL's URL library:
    that is too costly for the CRD's budget. IPv4 hosts inside 169.254.0.0/16 are found by
    their first two octets, and a host ending in a number must be a dotted quad.
    """
    authority = "^https?://([^/?#]*@)?"
    end = "(:[0-9]*)?([/?#]|$)"
    quad = f"{_OCTET}([.]{_OCTET}){{3}}"
    link_local = f"{authority}169[.]254[.]"
    numeric = f"{authority}([^[/?#:@]*[.])?(0[xX][0-9A-Fa-f]*|[0-9]+)[.]?{end}"
    dotted = f"{authority}{quad}{end}"
    v6 = f"{authority}[[](?i:::|0{{1,4}}:|0{{0,2}}64:|fd00:0?e[0-9a-f]{{2}}:)"
    return (
        f"({endpoint}.matches('{link_local}') || {endpoint}.matches('{v6}') || "
        f"({endpoint}.matches('{numeric}') && !{endpoint}.matches('{dotted}')))"
    )


METADATA_HINT: Final = (
    "covers the instance metadata service (169.254.0.0/16, fd00:ec2::/32) or reaches IPv4 "
    "through IPv6 (::ffff:0:0/96, 64:ff9b::/96), which hand out the node's credentials; "
    "only instanceMetadata: true opens it"
)


def metadata_rules(path: str) -> tuple[CelRule, CelRule]:
    """The CEL rules of an object store block at `path` (with ``egress``, ``endpoint`` and
    ``instanceMetadata``): the CRD's side of `destination_metadata_problem`."""
    return (
        cel(
            "!has(self.egress) || self.egress.all(c, (has(self.instanceMetadata) && "
            f"self.instanceMetadata && c == '{METADATA_OPENING}') || !{metadata_cel('c')})",
            f"{path}.egress: a range {METADATA_HINT}",
            field_path=".egress",
        ),
        cel(
            f"!has(self.endpoint) || !{endpoint_metadata_cel('self.endpoint')}",
            f"{path}.endpoint: the address {METADATA_HINT}, or is a number that is not a "
            "dotted-quad IPv4 address",
            field_path=".endpoint",
        ),
    )


def destination_metadata_problem(
    egress: Iterable[str], endpoint: str | None, *, instance_metadata: bool
) -> tuple[tuple[str], str] | None:
    """The field (relative) and message of an egress range or endpoint that reaches a
    metadata service; None if none does. `METADATA_OPENING` is allowed with
    `instance_metadata`, which opens it anyway."""
    for cidr in egress:
        if cidr == METADATA_OPENING and instance_metadata:
            continue
        overlap = metadata_overlap(cidr)
        if overlap is not None:
            return ("egress",), f"{cidr} overlaps {overlap}: it {METADATA_HINT}"
    host = urlsplit(endpoint).hostname if endpoint else None
    problem = host_metadata_problem(host) if host else None
    if problem is not None:
        return ("endpoint",), f"the host {host} {problem}"
    return None
