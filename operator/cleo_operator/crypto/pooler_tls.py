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

**Renewal without a refused client** (`TlsState`): the workload verifies the pooler against
a bundle it mounts from the pooler's Secret, which the kubelet refreshes only within a
minute or so. So the next pair is made `STAGE_BEFORE` the current one ends and its
certificate joins the bundle at once, weeks before the pooler presents it (at
`RENEW_BEFORE`); after the switch the old certificate stays in the bundle until it expires,
for pooler pods that still present it during the roll. Only a lost Secret has no such
notice.
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
    "BACKDATE",
    "RENEW_BEFORE",
    "STAGE_BEFORE",
    "VALIDITY",
    "PoolerTls",
    "TlsState",
    "certificates_in",
    "issue_pooler_tls",
    "pooler_dns_names",
    "tls_state",
    "usable_pooler_tls",
]

VALIDITY: Final = datetime.timedelta(days=365)
RENEW_BEFORE: Final = datetime.timedelta(days=30)
"""A certificate this close to its end is replaced (the pooler rolls onto the new one)."""
STAGE_BEFORE: Final = datetime.timedelta(days=60)
BACKDATE: Final = datetime.timedelta(hours=1)
"""A new certificate is valid from this long before it is made: nodes whose clocks lag the
operator's (within this) accept it at once."""
"""This close to its end, the next pair is made and its certificate trusted (`TlsState`)."""
_MAX_TRUSTED: Final = 3


@dataclasses.dataclass(frozen=True)
class PoolerTls:
    """PEM key and certificate of one tenant's pooler."""

    key_pem: str = dataclasses.field(repr=False)
    cert_pem: str


@dataclasses.dataclass(frozen=True)
class TlsState:
    """What the pooler presents, what comes next, and what the workload trusts."""

    current: PoolerTls
    """The pair the pooler's pods present."""
    staged: PoolerTls | None
    """The next pair, made `STAGE_BEFORE` the current one ends; not presented yet."""
    trusted: tuple[str, ...]
    """Certificates (PEM) the workload accepts from its pooler: the current one, the
    staged one, and earlier ones until they expire (pods of the last roll)."""

    @property
    def bundle(self) -> str:
        return "".join(self.trusted)


def _not_after(cert_pem: str) -> datetime.datetime | None:
    try:
        return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc
    except ValueError:
        return None


def certificates_in(bundle: str | None) -> list[str]:
    """The PEM certificates of `bundle`, each as its own text (as `issue_pooler_tls` writes
    one: from its BEGIN line to its END line and a newline)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    found: list[str] = []
    text = bundle or ""
    while (start := text.find(begin)) >= 0:
        stop = text.find(end, start)
        if stop < 0:
            break
        found.append(text[start : stop + len(end)] + "\n")
        text = text[stop + len(end) :]
    return found


def tls_state(
    *,
    current: PoolerTls | None,
    staged: PoolerTls | None,
    trusted: str | None,
    service: str,
    namespace: str,
    cluster_domain: str,
    now: datetime.datetime,
) -> TlsState:
    """The pooler's TLS from what its live Secret holds (`current`, `staged`, the `trusted`
    bundle); new pairs only when needed, so a reconcile with nothing due writes nothing."""
    names = {"service": service, "namespace": namespace, "cluster_domain": cluster_domain}
    if current is not None and not usable_pooler_tls(current, now=now, **names):
        current = None
    if staged is not None and not usable_pooler_tls(staged, now=now, **names):
        staged = None
    if current is None:
        current, staged = (staged, None) if staged is not None else (None, None)
    if current is None:
        current = issue_pooler_tls(now=now, **names)
    ends = _not_after(current.cert_pem)
    if staged is None and ends is not None and now + STAGE_BEFORE >= ends:
        staged = issue_pooler_tls(now=now, **names)
    kept = [current.cert_pem] + ([staged.cert_pem] if staged is not None else [])
    for cert in certificates_in(trusted):
        expires = _not_after(cert)
        if cert not in kept and expires is not None and now < expires:
            kept.append(cert)
    return TlsState(current=current, staged=staged, trusted=tuple(kept[:_MAX_TRUSTED]))


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
    serial = x509.random_serial_number()
    # A subject of its own (the serial in it) and key identifiers: a trusted bundle holds
    # two of these self-signed roots during a renewal, and OpenSSL picks a root by subject
    # (then key identifier); with equal subjects it would try the wrong one and fail.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, names[2]),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, format(serial, "x")),
        ]
    )
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .add_extension(identifier, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier),
            critical=False,
        )
        .not_valid_before(now - BACKDATE)
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
    is the certificate's, it names the Service, and it has more than `RENEW_BEFORE` left.

    Not whether it is valid yet: its issuer is the operator itself, so a "not yet valid"
    certificate means only that this replica's clock is behind the one that issued it (a
    leader change, a clock stepped back). Throwing it away would present a new one at
    once, before the workload's mounted bundle trusts it."""
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
        and now + RENEW_BEFORE < cert.not_valid_after_utc
    )
