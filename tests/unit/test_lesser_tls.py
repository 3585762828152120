"""Admin connections verify the server by default; a weaker mode is reported, truthfully."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import cast

import pytest

from cleo_operator.data.sites import WEAK_SSL_MODES, SiteConfig, SslMode, load_site_config
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import TenantDatabases, tls_observation
from tests.harness.postgres_tls import make_authority

SITES = """
sites:
  strong: {host: db1, sslRootCert: CA, adminSecret: {name: a, namespace: ops}}
  weak: {host: db2, sslMode: prefer, adminSecret: {name: b, namespace: ops}}
"""


@pytest.fixture
def sites_text(tmp_path: Path) -> str:
    return SITES.replace("CA", str(make_authority(tmp_path, "site").cert))


def test_default_is_verify_full_and_libpq_gets_it(sites_text: str) -> None:
    sites = load_site_config(sites_text)
    assert sites["strong"].sslmode == "verify-full"
    kwargs = sites["strong"].connection_kwargs()
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["sslrootcert"] == sites["strong"].ssl_root_cert


@pytest.mark.parametrize("mode", sorted(WEAK_SSL_MODES))
def test_weak_modes_are_reported_as_not_verified(mode: str) -> None:
    site = SiteConfig(name="eu", host="db", sslmode=cast(SslMode, mode))
    assert not site.verifies_server
    obs = tls_observation(site)
    assert (obs.status, obs.reason) == ("False", "ServerNotVerified")
    assert f"sslMode {mode}" in obs.message


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verifying_modes_are_reported_as_verified(mode: str) -> None:
    obs = tls_observation(SiteConfig(name="eu", host="db", sslmode=cast(SslMode, mode)))
    assert (obs.status, obs.reason) == ("True", "ServerVerified")
    assert "host name" in obs.message
    assert ("not its host name" in obs.message) == (mode == "verify-ca")


def test_a_weak_site_is_logged_at_start(caplog: pytest.LogCaptureFixture, sites_text: str) -> None:
    with caplog.at_level(logging.WARNING, logger="cleo_operator"):
        databases = TenantDatabases.from_environment(
            cast(KubeClient, object()), environ={"CLEO_SITES": sites_text}
        )
    with contextlib.closing(databases):
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("site weak: sslMode prefer does not verify" in w for w in warnings)
        assert not any("site strong" in w for w in warnings)
        assert databases.tls_observation("weak") == tls_observation(databases.pools.site("weak"))
        assert databases.tls_observation("nowhere") is None
