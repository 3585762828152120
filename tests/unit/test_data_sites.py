"""Site configuration parsing and admin credentials (pure code, no server needed)."""

from __future__ import annotations

import base64
import pickle
import textwrap
from pathlib import Path

import pytest

from cleo_operator.data.errors import InvalidTenantName, SiteConfigError
from cleo_operator.data.sites import (
    AdminCredentials,
    SecretRef,
    SiteConfig,
    load_site_config,
    parse_site_config,
    site_config_from_env,
)
from cleo_operator.data.tenant_db import (
    MAX_TENANT_NAME,
    database_url,
    tenant_database_name,
    tenant_role_name,
)
from tests.harness.postgres_tls import make_authority

EXAMPLE = textwrap.dedent(
    """
    sites:
      eu-west-1:
        host: pg-eu-west-1.db.internal
        port: 6432
        adminDatabase: cleo_admin
        sslMode: verify-full
        sslRootCert: /etc/cleo/pg-ca.pem
        connectTimeoutSeconds: 3
        statementTimeoutSeconds: 12.5
        pool: {minSize: 1, maxSize: 8}
        adminSecret: {name: pg-admin-eu-west-1, namespace: cleo-system}
        standby: eu-west-2
      eu-west-2:
        host: 10.0.0.7
        adminSecret: {name: pg-admin-eu-west-2, namespace: cleo-system}
    """
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_example_configuration_parses() -> None:
    # The CA file is on the operator's machine only: its reading is tested below.
    sites = load_site_config(EXAMPLE, read_ca_files=False)
    assert sites["eu-west-1"] == SiteConfig(
        name="eu-west-1",
        host="pg-eu-west-1.db.internal",
        port=6432,
        admin_database="cleo_admin",
        sslmode="verify-full",
        ssl_root_cert="/etc/cleo/pg-ca.pem",
        connect_timeout_seconds=3,
        statement_timeout_seconds=12.5,
        pool_min_size=1,
        pool_max_size=8,
        admin_secret=SecretRef(name="pg-admin-eu-west-1", namespace="cleo-system"),
        standby="eu-west-2",
    )
    defaults = sites["eu-west-2"]
    assert (defaults.port, defaults.admin_database, defaults.sslmode) == (
        5432,
        "postgres",
        "verify-full",
    )
    assert (defaults.pool_min_size, defaults.pool_max_size, defaults.standby) == (0, 4, None)
    kwargs = sites["eu-west-1"].connection_kwargs()
    assert kwargs["sslrootcert"] == "/etc/cleo/pg-ca.pem"
    assert kwargs["dbname"] == "cleo_admin"
    assert "password" not in kwargs
    assert "user" not in kwargs


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"port": 0}, r"sites\.a\.port: 0 is out of range; use 1\.\.65535"),
        ({"port": "5432"}, r"sites\.a\.port: expected an integer"),
        ({"port": True}, r"sites\.a\.port: expected an integer"),
        ({"host": ""}, r"sites\.a\.host: expected a non-empty string"),
        ({"host": None}, r"sites\.a\.host: required"),
        ({"sslMode": "maybe"}, r"sites\.a\.sslMode: 'maybe' is not a libpq sslmode"),
        ({"connectTimeoutSeconds": 1}, r"sites\.a\.connectTimeoutSeconds: 1 is out of range"),
        ({"pool": {"minSize": 5, "maxSize": 2}}, r"sites\.a\.pool\.maxSize: 2 is less than"),
        ({"pool": {"max": 2}}, r"sites\.a\.pool: unknown key\(s\) \['max'\]"),
        ({"adminSecret": None}, r"sites\.a\.adminSecret: required"),
        ({"adminSecret": {"name": "x"}}, r"sites\.a\.adminSecret\.namespace: required"),
        ({"adminSecret": {"name": "X_Y", "namespace": "n"}}, r"adminSecret\.name: 'X_Y'"),
        ({"standby": "a"}, r"sites\.a\.standby: a site cannot be its own standby"),
        ({"standby": "b"}, r"sites\.a\.standby: names site 'b', which is not defined"),
        ({"hostname": "typo"}, r"sites\.a: unknown key\(s\) \['hostname'\]"),
    ],
)
def test_errors_name_the_field(patch: dict[str, object], message: str) -> None:
    site: dict[str, object] = {"host": "h", "adminSecret": {"name": "s", "namespace": "n"}}
    site.update(patch)
    site = {key: value for key, value in site.items() if value is not None}
    with pytest.raises(SiteConfigError, match=message) as caught:
        parse_site_config({"sites": {"a": site}})
    assert caught.value.reason == "InvalidSiteConfig"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a mapping with a 'sites' key"),
        ({"sites": {}}, "sites: expected a non-empty mapping"),
        ({"sites": {"a": {}}, "extra": 1}, r"unknown top-level key\(s\) \['extra'\]"),
        ({"sites": {"Bad_Name": {}}}, r"sites\.Bad_Name: site names must be lowercase"),
        ({"sites": {"a": "host"}}, r"sites\.a: expected a mapping"),
    ],
)
def test_document_errors(document: object, message: str) -> None:
    with pytest.raises(SiteConfigError, match=message):
        parse_site_config(document)


def test_invalid_yaml_says_where() -> None:
    with pytest.raises(SiteConfigError, match=r"sites\.yaml: not valid YAML at line 3"):
        load_site_config("sites:\n  a: [unclosed\n", source="sites.yaml")


def test_from_env_inline_file_and_missing(tmp_path: Path) -> None:
    ca = make_authority(tmp_path, "site").cert
    example = EXAMPLE.replace("/etc/cleo/pg-ca.pem", str(ca))
    inline = site_config_from_env({"CLEO_SITES": example})
    assert sorted(inline) == ["eu-west-1", "eu-west-2"]
    assert inline["eu-west-1"].ca_pem is not None
    assert "BEGIN CERTIFICATE" in inline["eu-west-1"].ca_pem
    path = tmp_path / "sites.yaml"
    path.write_text(example)
    assert site_config_from_env({"CLEO_SITES_FILE": str(path)}) == inline
    with pytest.raises(SiteConfigError, match="CLEO_SITES_FILE: cannot read"):
        site_config_from_env({"CLEO_SITES_FILE": str(tmp_path / "missing.yaml")})
    with pytest.raises(SiteConfigError, match="no site configuration"):
        site_config_from_env({})
    with pytest.raises(SiteConfigError, match=r"\$CLEO_SITES: sites\.x\.host: required"):
        site_config_from_env({"CLEO_SITES": "sites: {x: {adminSecret: {name: a, namespace: b}}}"})


def test_admin_password_never_shows() -> None:
    secret = "hunter2-very-secret"
    creds = AdminCredentials(user="cleo_admin", password=secret)
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert secret not in text
        assert "cleo_admin" in text
    assert creds.password == secret
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(creds)


def test_admin_credentials_from_secret_data() -> None:
    creds = AdminCredentials.from_secret_data(
        {"username": b64("admin"), "password": b64("pä ss")}, where="cleo-system/pg-admin"
    )
    assert (creds.user, creds.password) == ("admin", "pä ss")
    with pytest.raises(SiteConfigError, match=r"cleo-system/pg-admin: key 'password' is missing"):
        AdminCredentials.from_secret_data({"username": b64("a")}, where="cleo-system/pg-admin")
    with pytest.raises(SiteConfigError, match="not base64") as caught:
        AdminCredentials.from_secret_data(
            {"username": b64("a"), "password": "not base64!"}, where="ns/s"
        )
    assert "not base64!" not in str(caught.value)


def test_tenant_names_map_to_identifiers() -> None:
    assert tenant_database_name("acme-corp") == "cleo_acme_corp"
    assert tenant_role_name("acme-corp") == "cleo_acme_corp"
    longest = "a" * MAX_TENANT_NAME
    assert len(tenant_database_name(longest).encode()) == 63
    for bad in ("", "Acme", "acme_corp", "-acme", "acme-", "a.b", "a" * (MAX_TENANT_NAME + 1)):
        with pytest.raises(InvalidTenantName) as caught:
            tenant_database_name(bad)
        assert caught.value.reason == "InvalidTenantName"


def test_database_url_encodes_and_brackets() -> None:
    site = SiteConfig(name="v6", host="fd00::7", port=5433, sslmode="require")
    url = database_url(site, tenant="acme", password="p@ss:w/rd?#%'")
    assert url == (
        "postgresql://cleo_acme:p%40ss%3Aw%2Frd%3F%23%25%27@[fd00::7]:5433/cleo_acme"
        "?sslmode=require"
    )
