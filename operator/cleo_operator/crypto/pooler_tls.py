"""The key and certificate a tenant's PgBouncer presents to its clients (client TLS).

Why self-signed, per tenant: the certificate is its own trust anchor. The operator makes it
and keeps it in the pooler's Secret; the operator's login check pins it (verifying the
server against that one certificate only), so a man in the middle of the pod network, or
an impersonating server, cannot complete TLS with the check, and the password never goes
out through a channel that is not the pooler's. No cluster CA, no cert-manager: nothing to
install, and no authority that could sign for another tenant's pooler.

Kept stable: a certificate stays while it parses, matches its key, names the pooler's
Service and has more than `RENEW_BEFORE` left; then (or when the Secret is lost) the
operator makes a new one, and the pooler rolls onto it. A reconcile with a usable one
writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "RENEW_BEFORE",
    "VALIDITY",
    "PoolerTls",
    "issue_pooler_tls",
    "pooler_dns_names",
    "usable_pooler_tls",
]

VALIDITY: Final = datetime.timedelta(days=365)
RENEW_BEFORE: Final = datetime.timedelta(days=30)
"""A certificate this close to its end is replaced (the pooler rolls onto the new one)."""


@dataclasses.dataclass(frozen=True)
class PoolerTls:
    """PEM key and certificate of one tenant's pooler."""

    key_pem: str = dataclasses.field(repr=False)
    cert_pem: str


def pooler_dns_names(service: str, namespace: str, cluster_domain: str) -> list[str]:
    """The names the pooler's Service answers to, short to fully qualified; the last is the
    one the workload connects to (`render.pooler.pooler_host`), which libpq's
    ``verify-full`` compares with these names."""
    domain = cluster_domain.strip(".")
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{domain}",
    ]


def issue_pooler_tls(
    *, service: str, namespace: str, cluster_domain: str, now: datetime.datetime
) -> PoolerTls:
    """A new P-256 key and a self-signed certificate for the Service's names."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = pooler_dns_names(service, namespace, cluster_domain)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return PoolerTls(
        key_pem=key_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode()
    )


def usable_pooler_tls(
    tls: PoolerTls,
    *,
    service: str,
    namespace: str,
    cluster_domain: str,
    now: datetime.datetime,
) -> bool:
    """Whether `tls` (read back from the pooler's Secret) may be kept: it parses, its key
    is the certificate's, it names the Service, and it has more than `RENEW_BEFORE` left."""
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
        key = serialization.load_pem_private_key(tls.key_pem.encode(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return False
    same_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    names = san.get_values_for_type(x509.DNSName)
    return (
        same_key
        and names == pooler_dns_names(service, namespace, cluster_domain)
        and cert.not_valid_before_utc <= now
        and now + RENEW_BEFORE < cert.not_valid_after_utc
    )
