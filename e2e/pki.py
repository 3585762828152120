"""Throwaway PKI for the local control plane: CAs, serving and client certificates, a
service-account key.

Everything is generated fresh for each cluster into its temporary folder, so no key of
a test cluster outlives it and none is ever committed.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FRONT_PROXY_CLIENT = "front-proxy-client"
"""The aggregator's client certificate name (kube-apiserver --requestheader-allowed-names)."""


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of the files the control-plane components read."""

    ca_cert: Path
    """The CA that signed the API server's serving certificate (also the cluster root CA)."""
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_public_key: Path
    """Verifies service-account tokens (kube-apiserver --service-account-key-file)."""
    sa_private_key: Path
    """Signs service-account tokens (apiserver and controller-manager)."""
    front_proxy_ca_cert: Path
    """Vouches for the aggregator's client certificate (--requestheader-client-ca-file).

    A CA of its own, as kubeadm makes: a certificate from the cluster CA must not be able
    to assert any user name through the X-Remote-User header."""
    front_proxy_client_cert: Path
    """What kube-apiserver presents when it proxies a request to an aggregated API server."""
    front_proxy_client_key: Path
    metrics_server_cert: Path
    """metrics-server's serving certificate, for the name the aggregator dials
    (metrics-server.kube-system.svc), signed by the cluster CA (the APIService's caBundle)."""
    metrics_server_key: Path
    kubelet_cert: Path
    """KWOK's serving certificate for the fake nodes' kubelet endpoint (127.0.0.1), signed
    by the cluster CA, so metrics-server verifies it instead of skipping TLS checks."""
    kubelet_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


_VALIDITY = datetime.timedelta(days=7)


def _new_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    *,
    hosts: list[str] | None = None,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed by `ca`: for serving `hosts` (DNS names or IPs), or a client."""
    ca_cert, ca_key = ca
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if hosts:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_pair(
    cert_path: Path, key_path: Path, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    cert_path.write_bytes(pair[0].public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, pair[1])


def generate_pki(folder: Path, *, hosts: list[str], metrics_server_hosts: list[str]) -> ClusterPKI:
    """Create the CAs, the API server's serving certificate for `hosts` (DNS names or IPs),
    the aggregation layer's certificates (metrics-server's for `metrics_server_hosts`), KWOK's
    serving certificate and an SA key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _new_ca("cleo-operator test CA")
    front_proxy_ca = _new_ca("cleo-operator test front-proxy CA")

    # Service-account tokens are signed with RS256 by default; an RSA key keeps every
    # consumer (including ones that only do RS256) happy.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # One file per field, named after it: the components read them by the paths below.
    pki = ClusterPKI(**{f.name: folder / f"{f.name}.pem" for f in dataclasses.fields(ClusterPKI)})
    _write_pair(pki.ca_cert, pki.ca_key, ca)
    _write_pair(pki.serving_cert, pki.serving_key, _issue(ca, "kube-apiserver", hosts=hosts))
    pki.front_proxy_ca_cert.write_bytes(front_proxy_ca[0].public_bytes(serialization.Encoding.PEM))
    _write_pair(
        pki.front_proxy_client_cert,
        pki.front_proxy_client_key,
        _issue(front_proxy_ca, FRONT_PROXY_CLIENT, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
    )
    _write_pair(
        pki.metrics_server_cert,
        pki.metrics_server_key,
        _issue(ca, "metrics-server", hosts=metrics_server_hosts),
    )
    _write_pair(pki.kubelet_cert, pki.kubelet_key, _issue(ca, "kwok-kubelet", hosts=["127.0.0.1"]))
    _write_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_serving_cert(
    pki: ClusterPKI, *, cert_path: Path, key_path: Path, common_name: str, hosts: list[str]
) -> None:
    """A serving certificate for `hosts`, signed by the cluster's CA, for a server a test
    starts after the cluster (the CA an APIService's caBundle names)."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the cluster CA's key is not an EC key")
    _write_pair(cert_path, key_path, _issue((ca_cert, ca_key), common_name, hosts=hosts))
