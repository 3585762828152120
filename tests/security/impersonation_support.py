"""A PostgreSQL server that impersonates a site: what an attacker who took over the site's
address (a hijacked DNS name or IP) would run to harvest the operator's admin password.

Its certificate comes from another CA than the site's, it asks for the password in clear
text (over its TLS), and it logs every login attempt, so a test can tell whether a password
ever reached it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.harness.postgres import PostgresServer
from tests.harness.postgres_tls import issue_server_certificate, make_authority

HARVESTING_HBA = (
    "local all all scram-sha-256",
    "hostssl all all 127.0.0.1/32 password",
    "host all all 127.0.0.1/32 password",
)


@contextlib.contextmanager
def impersonating_server(folder: Path) -> Iterator[PostgresServer]:
    """A running impersonator whose certificate and data live in `folder`."""
    certificate = issue_server_certificate(make_authority(folder, "impersonator"), folder)
    with PostgresServer(tls=certificate, settings={"log_connections": "on"}) as server:
        server.set_hba(HARVESTING_HBA)
        yield server


def password_attempts(server: PostgresServer) -> list[str]:
    """The server's log lines of login attempts, failed or not."""
    return [
        line
        for line in server.log_file.read_text(errors="replace").splitlines()
        if "password authentication failed" in line or "connection authorized" in line
    ]
