"""Failover repoints the credentials Secret to the new site's CA, or takes the old one away.

A standby site may have another CA than the primary's: after the repoint the Secret's
``ca.crt``, ``PGSSLROOTCERT`` and ``DATABASE_URL`` are the new site's, so the pods that the
failover rolls check the new server with the new CA. A weak new site leaves no CA behind.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from cleo_operator.data.sites import CA_KEY, CA_PATH, SiteConfig, parse_site_config
from cleo_operator.data.tenant_db import site_client_values
from cleo_operator.failover.workload import repoint_credentials
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import credentials_fingerprint
from tests.harness.postgres_tls import make_authority
from tests.integration.tenant_database_support import namespace, secret_of, secret_values

pytestmark = [pytest.mark.cluster]

ADMIN = {"name": "pg-admin", "namespace": "ops"}
TENANT = "acme"
PASSWORD = "p" * 43


def sites(tmp_path: Path) -> dict[str, SiteConfig]:
    first = make_authority(tmp_path / "a", "primary").cert
    second = make_authority(tmp_path / "b", "standby").cert
    return parse_site_config(
        {
            "sites": {
                "primary": {"host": "pg-a", "sslRootCert": str(first), "adminSecret": ADMIN},
                "standby": {"host": "pg-b", "sslRootCert": str(second), "adminSecret": ADMIN},
                "weak": {"host": "pg-c", "sslMode": "require", "adminSecret": ADMIN},
            }
        }
    )


def test_repointing_carries_the_new_sites_ca_and_drops_a_stale_one(
    kube: KubeClient, tmp_path: Path
) -> None:
    configured = sites(tmp_path)
    with namespace(kube) as ns:
        values = {
            "PGDATABASE": "cleo_acme",
            "PGUSER": "cleo_acme",
            "PGPASSWORD": PASSWORD,
            **site_client_values(configured["primary"], tenant=TENANT, password=PASSWORD),
        }
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "cleo-database", "namespace": ns},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
            }
        )
        before = credentials_fingerprint(values)

        assert repoint_credentials(
            kube, ns, secret="cleo-database", site=configured["standby"], tenant=TENANT
        )
        moved = secret_values(secret_of(kube, ns))
        assert moved[CA_KEY] == configured["standby"].ca_pem != configured["primary"].ca_pem
        assert moved["PGSSLROOTCERT"] == CA_PATH
        assert moved["PGHOST"] == "pg-b"
        assert (
            f"@pg-b:5432/cleo_acme?sslmode=verify-full&sslrootcert={CA_PATH}"
            in (moved["DATABASE_URL"])
        )
        assert moved["PGPASSWORD"] == PASSWORD
        # The checksum the Deployment carries changes: the pods roll onto the new CA.
        assert credentials_fingerprint(moved) != before
        # Level-based: the same repoint again writes nothing.
        assert not repoint_credentials(
            kube, ns, secret="cleo-database", site=configured["standby"], tenant=TENANT
        )

        assert repoint_credentials(
            kube, ns, secret="cleo-database", site=configured["weak"], tenant=TENANT
        )
        weak = secret_values(secret_of(kube, ns))
        assert CA_KEY not in weak
        assert "PGSSLROOTCERT" not in weak
        assert weak["PGSSLMODE"] == "require"
        assert weak["DATABASE_URL"].endswith("?sslmode=require")
        assert not repoint_credentials(
            kube, ns, secret="cleo-database", site=configured["weak"], tenant=TENANT
        )
