"""Certificates for throwaway PostgreSQL servers, made with the real ``openssl`` command.

A site's admin connections verify the server by default (``sslMode: verify-full``), so
tests need servers with real certificates: an authority (the site's CA), a server
certificate it signs for ``127.0.0.1`` and ``localhost``, and, for attacks, a second
authority that plays an impersonator's. Keys are EC P-256 (quick to make); everything
is valid for two days and lives in a folder the caller removes.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


class CertificateError(RuntimeError):
    """openssl failed; the message has its stderr."""


@dataclasses.dataclass(frozen=True)
class Authority:
    """A certificate authority: its certificate (what sslRootCert names) and its key."""

    name: str
    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class ServerCertificate:
    """A server certificate and its key, signed by ``authority``."""

    cert: Path
    key: Path
    authority: Authority


def _openssl(args: Sequence[str | Path], *, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertificateError("openssl not found on PATH: install it to run the TLS tests")
    result = subprocess.run(
        [binary, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_authority(folder: Path, name: str) -> Authority:
    """A self-signed CA named ``name`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}-ca.crt", folder / f"{name}-ca.key"
    _openssl(
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", f"/CN={name} test CA", "-keyout", key, "-out", cert,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        cwd=folder,
    )  # fmt: skip
    return Authority(name=name, cert=cert, key=key)


def issue_server_certificate(
    authority: Authority,
    folder: Path,
    *,
    name: str = "server",
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
) -> ServerCertificate:
    """A server certificate for ``hosts`` (IP addresses and DNS names), signed by ``authority``."""
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    ext = folder / f"{name}.ext"
    alt = ",".join(
        f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
        for host in hosts
    )
    ext.write_text(
        f"subjectAltName={alt}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        [
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={hosts[0]}", "-keyout", key, "-out", csr,
        ],
        cwd=folder,
    )  # fmt: skip
    _openssl(
        [
            "x509", "-req", "-in", csr, "-CA", authority.cert, "-CAkey", authority.key,
            "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert,
        ],
        cwd=folder,
    )  # fmt: skip
    return ServerCertificate(cert=cert, key=key, authority=authority)
