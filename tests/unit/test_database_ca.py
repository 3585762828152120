"""The site's CA reaches the tenant's clients: read and checked at load, rendered for pods."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.backup.connection import ConnectionInfo, libpq_environment
from cleo_operator.data.errors import SiteConfigError
from cleo_operator.data.sites import CA_KEY, CA_MOUNT_DIR, CA_PATH, SiteConfig, parse_site_config
from cleo_operator.data.tenant_db import database_url, site_client_values
from cleo_operator.reconcile.database import SECRET_KEYS, credentials_fingerprint, tls_observation
from cleo_operator.render.backup import BackupPodSettings, render_backup
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.workload import render_deployment
from tests.harness.postgres_tls import issue_server_certificate, make_authority

ADMIN = {"name": "pg-admin", "namespace": "ops"}


def site(entry: dict[str, Any]) -> SiteConfig:
    return parse_site_config(
        {"sites": {"eu": {"host": "db.internal", "adminSecret": ADMIN, **entry}}}
    )["eu"]


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_authority(tmp_path_factory.mktemp("ca"), "site").cert


# --------------------------------------------------------------------------- loading


def test_the_ca_is_read_at_load_as_pem_certificates(ca_file: Path, tmp_path: Path) -> None:
    loaded = site({"sslRootCert": str(ca_file)})
    assert loaded.ca_pem is not None
    assert loaded.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    # A bundle of two CAs, with comments between them: both certificates, nothing else.
    other = make_authority(tmp_path, "other").cert.read_text()
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(f"# site CA\n{ca_file.read_text()}\n# next CA\n{other}")
    pem = site({"sslRootCert": str(bundle)}).ca_pem
    assert pem is not None
    assert pem.count("BEGIN CERTIFICATE") == 2
    assert "#" not in pem
    assert "BEGIN" not in repr(loaded)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "does not hold PEM CA certificate"),
        (b"not a certificate\n", "does not hold PEM CA certificate"),
        (b"\xff\xfe binary", "not ASCII text"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM CA certificate"),
    ],
)
def test_a_file_that_is_no_certificate_fails_naming_the_field(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    with pytest.raises(SiteConfigError, match=r"sites\.eu\.sslRootCert: ") as caught:
        site({"sslRootCert": str(path)})
    assert problem in caught.value.message


def test_a_private_key_is_never_taken_for_a_ca(ca_file: Path, tmp_path: Path) -> None:
    server = issue_server_certificate(make_authority(tmp_path, "x"), tmp_path)
    mixed = tmp_path / "mixed.pem"
    mixed.write_text(ca_file.read_text() + server.key.read_text())
    with pytest.raises(SiteConfigError, match=r"sites\.eu\.sslRootCert: .*private key") as caught:
        site({"sslRootCert": str(mixed)})
    assert "PRIVATE KEY-----\n" not in caught.value.message


def test_a_missing_file_fails_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match=r"sites\.eu\.sslRootCert: cannot read"):
        site({"sslRootCert": str(tmp_path / "absent.pem")})


def test_verify_ca_needs_a_ca_of_its_own() -> None:
    with pytest.raises(
        SiteConfigError, match=r"sites\.eu\.sslRootCert: required with sslMode verify-ca"
    ):
        site({"sslMode": "verify-ca"})


def test_verify_full_without_a_ca_uses_the_system_store() -> None:
    loaded = site({})
    assert loaded.connection_kwargs()["sslrootcert"] == "system"
    values = site_client_values(loaded, tenant="acme", password="pw")
    assert values["PGSSLROOTCERT"] == "system"
    assert CA_KEY not in values
    assert values["DATABASE_URL"].endswith("?sslmode=verify-full&sslrootcert=system")


# --------------------------------------------------------------------------- the Secret


def test_a_verifying_site_gives_its_clients_the_ca_file_it_mounts(ca_file: Path) -> None:
    loaded = site({"sslRootCert": str(ca_file), "port": 6432})
    values = site_client_values(loaded, tenant="acme", password="pw")
    assert values == {
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": CA_PATH,
        CA_KEY: loaded.ca_pem,
        "DATABASE_URL": (
            "postgresql://cleo_acme:pw@db.internal:6432/cleo_acme"
            f"?sslmode=verify-full&sslrootcert={CA_PATH}"
        ),
    }
    assert f"{CA_MOUNT_DIR}/{CA_KEY}" == CA_PATH
    # Never the operator's own path: that file is in the operator's pod only.
    assert str(ca_file) not in str(values)
    assert set(values) <= set(SECRET_KEYS)


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require"])
def test_a_weak_site_gives_no_ca_and_its_mode_as_configured(mode: str, ca_file: Path) -> None:
    loaded = site({"sslMode": mode, "sslRootCert": str(ca_file)})
    values = site_client_values(loaded, tenant="acme", password="pw")
    assert values["PGSSLMODE"] == mode
    assert "PGSSLROOTCERT" not in values
    assert CA_KEY not in values
    assert values["DATABASE_URL"].endswith(f"?sslmode={mode}")


def test_a_site_built_without_its_ca_is_refused_not_half_rendered() -> None:
    built = SiteConfig(name="eu", host="db", ssl_root_cert="/etc/ca.pem")
    with pytest.raises(ValueError, match="sslRootCert was not read"):
        database_url(built, tenant="acme", password="pw")


def test_another_ca_changes_the_checksum_that_rolls_the_pods(ca_file: Path, tmp_path: Path) -> None:
    first = site({"sslRootCert": str(ca_file)})
    second = dataclasses.replace(
        first, ca_pem=make_authority(tmp_path, "new").cert.read_text(), ssl_root_cert="/x"
    )

    def checksum(s: SiteConfig) -> str:
        return credentials_fingerprint(
            {"PGPASSWORD": "pw", **site_client_values(s, tenant="acme", password="pw")}
        )

    assert checksum(first) != checksum(second)
    assert checksum(first) == checksum(site({"sslRootCert": str(ca_file)}))


# --------------------------------------------------------------------------- pods


def test_the_workload_mounts_the_ca_key_read_only_whatever_the_site() -> None:
    spec = parse_tenant_spec({"workload": {"image": "registry.example.com/cleoai:1"}})

    def render() -> dict[str, Any]:
        deployment = render_deployment(
            tenant="acme",
            namespace="cleo-acme",
            owner=tenant_owner(name="acme", uid="u"),
            spec=spec,
            config_checksum="c",
            database_secret="cleo-database",
        )
        assert deployment is not None
        return deployment

    deployment = render()
    assert deployment == render()  # deterministic: a no-op reconcile writes nothing
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CA_MOUNT_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {
        "secretName": "cleo-database",
        "items": [{"key": CA_KEY, "path": CA_KEY}],
        "defaultMode": 0o444,
        "optional": True,  # a weak site has no ca.crt: the pod still starts
    }
    # PGSSLROOTCERT and DATABASE_URL come with the Secret's other keys.
    assert {"secretRef": {"name": "cleo-database"}} in container["envFrom"]

    without = render_deployment(
        tenant="acme",
        namespace="cleo-acme",
        owner=tenant_owner(name="acme", uid="u"),
        spec=spec,
        config_checksum="c",
    )
    assert without is not None
    (bare,) = without["spec"]["template"]["spec"]["containers"]
    assert all(m["mountPath"] != CA_MOUNT_DIR for m in bare["volumeMounts"])


def test_the_backup_runner_mounts_the_ca_and_gets_pgsslrootcert_if_there_is_one() -> None:
    objects = render_backup(
        name="nightly",
        namespace="cleo-acme",
        uid="u",
        tenant="acme",
        spec=parse_backup_spec(
            {"tenant": "acme", "destination": {"type": "pvc", "pvc": {"claimName": "b"}}}
        ),
        settings=BackupPodSettings(image="registry.example/cleo-operator:1"),
    )
    job = objects.runner
    assert job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CA_MOUNT_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "cleo-database"
    assert volume["secret"]["items"] == [{"key": CA_KEY, "path": CA_KEY}]
    assert volume["secret"]["optional"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["PGSSLROOTCERT"]["valueFrom"] == {
        "secretKeyRef": {"name": "cleo-database", "key": "PGSSLROOTCERT", "optional": True}
    }


def test_the_backup_tools_get_the_system_store_as_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # pg_dump of the default image links libpq 15, which takes "system" for a file name.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    info = ConnectionInfo(
        host="db", dbname="d", user="u", sslmode="verify-full", sslrootcert="system"
    )
    with libpq_environment(info, base={}) as env:
        assert env["PGSSLROOTCERT"] != "system"
        assert Path(env["PGSSLROOTCERT"]).is_absolute()
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/custom/ca.pem")
    with libpq_environment(info, base={}) as env:
        assert env["PGSSLROOTCERT"] == "/etc/custom/ca.pem"
    mounted = dataclasses.replace(info, sslrootcert=CA_PATH)
    with libpq_environment(mounted, base={}) as env:
        assert env["PGSSLROOTCERT"] == CA_PATH


def test_the_tls_condition_says_which_cas_check_the_server(ca_file: Path) -> None:
    system = tls_observation(site({}))
    assert "against the system's trusted CAs" in system.message
    own = tls_observation(site({"sslRootCert": str(ca_file)}))
    assert "against the site's CA" in own.message
    assert (system.reason, own.reason) == ("ServerVerified", "ServerVerified")
