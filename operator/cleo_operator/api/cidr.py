"""IP ranges in CIDR notation, checked strictly wherever the API takes one.

Why a strict pattern and not CEL's ``isCIDR()``: that function needs Kubernetes 1.31 and the
CRDs support 1.30, so the CRD carries a pattern that accepts exactly what Python's
``ipaddress`` accepts (every IPv4 octet at most 255 with a prefix to /32, IPv6 without an
embedded IPv4 address with a prefix to /128), and pydantic checks the same with
``ipaddress``, so the API server and the operator agree on every range.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from cleo_operator.api.schema import Extra

__all__ = ["CIDR_PATTERN", "Cidr"]

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
