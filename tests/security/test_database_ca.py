"""The tenant's own clients check the site's server with the site's CA, as the operator does.

Sites verify the server by default (``sslMode: verify-full``), but the CA file the
operator uses (``sslRootCert``) is a path inside the operator's pod. The tenant's pods and
its backup runner get the CA with their credentials: the credentials Secret's ``ca.crt``,
mounted read-only at ``CA_PATH``, named by ``PGSSLROOTCERT`` and by ``DATABASE_URL``.

Each client here runs as in its pod: a child process whose environment is what the pod
gets from the Secret as the operator rendered it (``envFrom`` for CleoAI, the rendered
``secretKeyRef`` list for the runner) and whose ``/var/run`` is a private tmpfs with the
Secret's ``ca.crt`` at ``CA_PATH`` (a mount namespace of its own, ``unshare``), so that the
URL and the variables are used exactly as rendered. The server is a real PostgreSQL with
TLS; the impersonator is another real one, with a certificate from another CA, that asks
for passwords in clear text.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.data.sites import CA_KEY, CA_MOUNT_DIR, CA_PATH
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import TenantDatabases
from cleo_operator.render.backup import BackupPodSettings, render_backup
from tests.harness.postgres import PostgresServer, find_postgres_bindir
from tests.harness.postgres_tls import Authority, issue_server_certificate, make_authority
from tests.integration.tenant_database_support import (
    Tenant,
    build_databases,
    drop_tenant_objects,
    namespace,
    reconcile,
    secret_of,
    superuser_secret,
    unique,
)
from tests.security.impersonation_support import impersonating_server, password_attempts

pytestmark = [
    pytest.mark.security,
    pytest.mark.postgres,
    pytest.mark.cluster,
    pytest.mark.usefixtures("without_session_operator"),
]

# The impersonator asks for the password in clear text: what a harvester does.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _pods_possible() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", "mount -t tmpfs tmpfs /run"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def pods_possible() -> None:
    if not _pods_possible():
        pytest.fail("needs unshare with mount namespaces (the pod's CA mount at its own path)")


@pytest.fixture(scope="module")
def site_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("site-ca"), "site")


@pytest.fixture(scope="module")
def genuine(
    site_ca: Authority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServer]:
    certificate = issue_server_certificate(site_ca, tmp_path_factory.mktemp("genuine"))
    with PostgresServer(tls=certificate) as server:
        yield server


@pytest.fixture(scope="module")
def impersonator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with impersonating_server(tmp_path_factory.mktemp("impersonator")) as server:
        yield server


@pytest.fixture(scope="module")
def databases(
    kube: KubeClient, crds_installed: None, genuine: PostgresServer
) -> Iterator[TenantDatabases]:
    """The operator's database part, its site the TLS server with ``sslRootCert``."""
    del crds_installed
    with namespace(kube, unique("ca-operator")) as operator_ns:
        superuser_secret(kube, genuine, namespace=operator_ns)
        entry = genuine.site_entry(
            adminSecret={"name": "pg-admin", "namespace": operator_ns}, connectTimeoutSeconds=2
        )
        assert entry["sslMode"] == "verify-full"
        with contextlib.closing(build_databases(kube, {"main": entry})) as service:
            yield service


@pytest.fixture(scope="module")
def credentials(
    kube: KubeClient, databases: TenantDatabases, genuine: PostgresServer
) -> Iterator[dict[str, str]]:
    """The tenant's credentials Secret's data, decoded, as the operator rendered it."""
    name = unique("ca")
    tenant = Tenant(kube, name, {"database": {"enabled": True, "site": "main"}})
    try:
        with namespace(kube, f"cleo-{name}") as ns:
            outcome = reconcile(databases, tenant, ns)
            assert outcome.condition.status == "True", outcome.condition.message
            secret = secret_of(kube, ns)
            assert secret is not None
            values = {
                key: base64.b64decode(value).decode()
                for key, value in (secret.get("data") or {}).items()
            }
            values["_tenant"] = name
            # A second reconcile with nothing changed writes nothing.
            again = reconcile(databases, tenant, ns)
            assert not again.secret_written
            yield values
    finally:
        tenant.delete()
        drop_tenant_objects(genuine, name)


def run_in_pod(
    env: Mapping[str, str], ca_pem: str | None, code: str, folder: Path
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as in a pod: ``env`` only, the CA file at ``CA_PATH``."""
    ca_source = folder / "secret-ca.crt"
    setup = ["mount -t tmpfs tmpfs /run", f"mkdir -p {CA_MOUNT_DIR}"]
    if ca_pem is not None:
        ca_source.write_text(ca_pem)
        setup += [f"cp {ca_source} {CA_PATH}", f"chmod 0444 {CA_PATH}"]
    script = folder / "client.py"
    script.write_text(textwrap.dedent(code))
    setup.append(f'exec "{sys.executable}" {script}')
    pod_env = {
        "PATH": f"{find_postgres_bindir()}:/usr/bin:/bin",
        "HOME": str(folder),  # no ~/.postgresql/root.crt to fall back on
        "PYTHONPATH": ":".join(p for p in sys.path if p),
        **env,
    }
    return subprocess.run(
        ["unshare", "-rm", "sh", "-ec", " && ".join(setup)],
        env=pod_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def workload_env(values: Mapping[str, str]) -> dict[str, str]:
    """What ``envFrom: secretRef`` gives the CleoAI container (env-variable names)."""
    return {k: v for k, v in values.items() if ENV_NAME.match(k)}


def runner_env(values: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment as its rendered Job says: each ``secretKeyRef`` resolved."""
    objects = render_backup(
        name="nightly",
        namespace="cleo-x",
        uid="u",
        tenant=values["_tenant"],
        spec=parse_backup_spec(
            {"tenant": values["_tenant"], "destination": {"type": "pvc", "pvc": {"claimName": "b"}}}
        ),
        settings=BackupPodSettings(image="registry.example/cleo-operator:1"),
    )
    job = objects.runner
    assert job["kind"] == "Job"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert CA_MOUNT_DIR in mounts, "the runner's pod does not mount the site's CA"
    env: dict[str, str] = {}
    for item in container["env"]:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None or ref["name"] != "cleo-database":
            continue
        if ref["key"] in values:
            env[item["name"]] = values[ref["key"]]
        else:
            assert ref.get("optional"), f"{ref['key']} is required but not in the Secret"
    return env


APP_CLIENT = """
    import json, os, psycopg
    out = {}
    for how, dsn in (("url", os.environ["DATABASE_URL"]), ("libpq-env", "")):
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                out[how] = conn.execute(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).fetchone()[0]
        except psycopg.OperationalError as error:
            out[how] = "refused: " + str(error)
    print(json.dumps(out))
"""

RUNNER_CLIENT = """
    import json, os, sys
    from datetime import UTC, datetime
    from cleo_operator.backup.connection import ConnectionInfo
    from cleo_operator.backup.errors import BackupError
    from cleo_operator.backup.runner import run_backup
    from cleo_operator.backup.storage import LocalStorage
    from cleo_operator.crypto import Keyring

    source = ConnectionInfo.from_environment()
    try:
        result = run_backup(
            source=source,
            tenant=os.environ["TENANT"],
            storage=LocalStorage(sys.argv[0] + ".backups"),
            keyring=Keyring.generate(datetime.now(UTC)),
        )
    except BackupError as error:
        print(json.dumps({"refused": error.reason, "message": error.message}))
    else:
        print(json.dumps({"backup": result.backup_id, "tables": sorted(result.manifest.tables)}))
"""


def output(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-2000:]
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def at(values: Mapping[str, str], server: PostgresServer) -> dict[str, str]:
    """The same credentials, with ``server`` answering at the site's address.

    An impersonator takes over the site's address (a hijacked DNS name or IP); here both
    servers listen on 127.0.0.1, so only the port tells them apart and is swapped.
    """
    moved = dict(values)
    site_port = values["PGPORT"]
    moved["PGPORT"] = str(server.port)
    moved["DATABASE_URL"] = values["DATABASE_URL"].replace(f":{site_port}/", f":{server.port}/")
    assert moved["DATABASE_URL"] != values["DATABASE_URL"]
    return moved


# --------------------------------------------------------------------------- the site


def test_the_secret_carries_the_sites_ca_and_names_the_mounted_file(
    credentials: dict[str, str], site_ca: Authority
) -> None:
    assert credentials["PGSSLMODE"] == "verify-full"
    assert credentials["PGSSLROOTCERT"] == CA_PATH
    assert credentials["DATABASE_URL"].endswith(f"?sslmode=verify-full&sslrootcert={CA_PATH}")
    assert "BEGIN CERTIFICATE" in credentials[CA_KEY]
    # The site's own CA (re-encoded), never the operator's file path.
    assert credentials[CA_KEY].split() == site_ca.cert.read_text().split()
    assert str(site_ca.cert) not in json.dumps(credentials)


@pytest.mark.usefixtures("pods_possible")
def test_the_tenant_pod_connects_with_verify_full_through_the_mounted_ca(
    credentials: dict[str, str], tmp_path: Path
) -> None:
    result = output(
        run_in_pod(workload_env(credentials), credentials.get(CA_KEY), APP_CLIENT, tmp_path)
    )
    assert result == {"url": True, "libpq-env": True}


@pytest.mark.usefixtures("pods_possible")
def test_the_backup_runner_backs_up_the_tls_site(
    credentials: dict[str, str], genuine: PostgresServer, tmp_path: Path
) -> None:
    database = credentials["PGDATABASE"]
    genuine.execute("CREATE TABLE IF NOT EXISTS public.notes (id int PRIMARY KEY)", dbname=database)
    genuine.execute(
        sql.SQL("ALTER TABLE public.notes OWNER TO {}").format(
            sql.Identifier(credentials["PGUSER"])
        ),
        dbname=database,
    )
    env = {**runner_env(credentials), "TENANT": credentials["_tenant"]}
    assert env["PGSSLROOTCERT"] == CA_PATH
    result = output(run_in_pod(env, credentials.get(CA_KEY), RUNNER_CLIENT, tmp_path))
    assert "backup" in result, result
    assert "public.notes" in result["tables"]


# --------------------------------------------------------------------------- the attack


@pytest.mark.usefixtures("pods_possible")
def test_an_impersonator_is_refused_by_the_pod_and_the_runner_and_gets_no_password(
    credentials: dict[str, str], impersonator: PostgresServer, tmp_path: Path
) -> None:
    password = credentials["PGPASSWORD"]
    before = len(password_attempts(impersonator))
    hijacked = at(credentials, impersonator)

    app = output(run_in_pod(workload_env(hijacked), hijacked[CA_KEY], APP_CLIENT, tmp_path))
    for how in ("url", "libpq-env"):
        assert str(app[how]).startswith("refused: "), app
        assert "certificate verify failed" in app[how]
        assert password not in app[how]

    runner = output(
        run_in_pod(
            {**runner_env(hijacked), "TENANT": credentials["_tenant"]},
            hijacked[CA_KEY],
            RUNNER_CLIENT,
            tmp_path,
        )
    )
    assert runner.get("refused") == "DatabaseUnavailable", runner
    assert "certificate verify failed" in runner["message"]
    assert password not in runner["message"]
    assert not (tmp_path / "client.py.backups").exists() or not any(
        (tmp_path / "client.py.backups").rglob("*.cleo*")
    )
    # Nothing reached the impersonator: no login, so no password.
    assert password_attempts(impersonator)[before:] == []

    # Control: the same pod with a mode that does not check the server is asked for the
    # password and hands it over (the log records it): the check above can see a harvest.
    weak = {**workload_env(hijacked), "PGSSLMODE": "require"}
    weak["DATABASE_URL"] = hijacked["DATABASE_URL"].split("?")[0] + "?sslmode=require"
    run_in_pod(weak, None, APP_CLIENT, tmp_path)
    assert any(
        "password authentication failed" in line
        for line in password_attempts(impersonator)[before:]
    )
