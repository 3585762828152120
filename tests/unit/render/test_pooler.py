"""The pooler's objects and files, and the workload's route through it, rendered without I/O."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.crypto.pooler_tls import PoolerTls
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.pooler import (
    CLIENT_PASSWORD_KEY,
    CLIENT_URL_KEY,
    DATABASE_ROUTE_LABEL,
    INI_KEY,
    POOLER_HASH_ANNOTATION,
    POOLER_NAME,
    SYSTEM_CA_BUNDLE,
    TLS_CERT,
    TLS_KEY,
    USERLIST_KEY,
    PoolerConfigError,
    PoolerImage,
    PoolerTarget,
    pooler_config_values,
    render_pgbouncer_ini,
    render_pooler,
    render_userlist,
)
from cleo_operator.render.workload import render_deployment
from tests.unit.render.pod_security import restricted_violations
from tests.unit.render.specs import CHECKSUM, TENANT, UID, WORKLOAD, spec_of

NS = "acme-prod"
OWNER = tenant_owner(name=TENANT, uid=UID)
PASSWORD = "s3cret-Pa55word-made-by-the-operator_012345"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
IMAGE = PoolerImage(image="registry.example/pgbouncer:1.24.1")


def target(**changes: Any) -> PoolerTarget:
    fields: dict[str, Any] = {
        "host": "pg.example.internal",
        "port": 5433,
        "dbname": "cleo_acme",
        "user": "cleo_acme",
        "sslmode": "verify-full",
        "ca_pem": CA,
        "verifies_server": True,
        **changes,
    }
    return PoolerTarget(**fields)


def ini_settings(text: str) -> dict[str, str]:
    section = text.split("[pgbouncer]\n", 1)[1]
    pairs = (line.split(" = ", 1) for line in section.splitlines() if " = " in line)
    return dict(pairs)


def objects(pooler: PoolerSpec | None = None, **changes: Any) -> dict[str, KubeObject]:
    rendered = render_pooler(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        pooler=pooler or PoolerSpec(enabled=True),
        target=target(**changes),
        password=PASSWORD,
        image=IMAGE,
    )
    return {obj["kind"]: obj for obj in rendered}


def secret_values(secret: KubeObject) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_the_ini_serves_only_the_tenants_database_with_the_spec_pool() -> None:
    pooler = PoolerSpec(enabled=True, mode="session", pool_size=7, max_client_connections=300)
    text = render_pgbouncer_ini(target=target(), pooler=pooler, password=PASSWORD)
    databases = text.split("[databases]\n", 1)[1].split("\n\n", 1)[0].strip().splitlines()
    assert databases == [
        "cleo_acme = host=pg.example.internal port=5433 dbname=cleo_acme user=cleo_acme "
        f"password={PASSWORD}"
    ]
    settings = ini_settings(text)
    assert settings["pool_mode"] == "session"
    assert settings["default_pool_size"] == "7"
    # The pool's size is also a hard cap per database and per user of one process.
    assert settings["max_db_connections"] == settings["max_user_connections"] == "7"
    assert settings["max_client_conn"] == "300"
    assert settings["auth_type"] == "scram-sha-256"
    assert settings["auth_file"] == "/etc/pgbouncer/userlist.txt"


@pytest.mark.parametrize(
    ("changes", "sslmode", "ca_file"),
    [
        ({}, "verify-full", "/etc/pgbouncer/ca.crt"),
        ({"ca_pem": None}, "verify-full", SYSTEM_CA_BUNDLE),
        ({"sslmode": "require", "ca_pem": None, "verifies_server": False}, "require", None),
        ({"sslmode": "disable", "ca_pem": None, "verifies_server": False}, "disable", None),
    ],
)
def test_tls_to_the_site_is_as_the_site_is_configured(
    changes: dict[str, Any], sslmode: str, ca_file: str | None
) -> None:
    settings = ini_settings(
        render_pgbouncer_ini(target=target(**changes), pooler=PoolerSpec(), password=PASSWORD)
    )
    assert settings["server_tls_sslmode"] == sslmode
    assert settings.get("server_tls_ca_file") == ca_file


def test_the_auth_file_holds_the_tenants_role_only() -> None:
    assert render_userlist(user="cleo_acme", password=PASSWORD) == f'"cleo_acme" "{PASSWORD}"\n'


@pytest.mark.security
@pytest.mark.parametrize("password", ['a"b', "a\nb", "a\rb", "a\tb", "", "naïve"])
def test_a_password_that_could_forge_an_auth_file_line_is_refused(password: str) -> None:
    with pytest.raises(PoolerConfigError) as caught:
        render_userlist(user="cleo_acme", password=password)
    assert caught.value.reason == "PoolerConfigInvalid"
    assert password not in caught.value.message or not password


@pytest.mark.security
@pytest.mark.parametrize(
    "password",
    [
        # PgBouncer reads these in its auth file as verifiers, not passwords: a planted
        # iteration count makes every client's connect run PBKDF2 that long.
        "SCRAM-SHA-256$6000000:c2FsdA==$c3RvcmVkS2V5PQ==:c2VydmVyS2V5PQ==",
        "md5" + "0" * 32,
        "A" * 42,
        "A" * 44,
        "A" * 42 + "$",
    ],
)
def test_a_password_shaped_like_a_scram_or_md5_secret_is_refused(password: str) -> None:
    with pytest.raises(PoolerConfigError) as caught:
        render_userlist(user="cleo_acme", password=password)
    assert caught.value.reason == "PoolerConfigInvalid"
    assert password not in caught.value.message
    render_userlist(user="cleo_acme", password="A" * 43)  # the operator's own form


def test_the_secret_holds_the_files_the_ca_and_the_workloads_url() -> None:
    secret = objects()["Secret"]
    assert secret["metadata"]["name"] == POOLER_NAME
    values = secret_values(secret)
    assert set(values) == {
        INI_KEY,
        USERLIST_KEY,
        CLIENT_URL_KEY,
        CLIENT_PASSWORD_KEY,
        "PGHOST",
        "ca.crt",
    }
    assert values["ca.crt"] == CA
    # The Service's fully qualified name: no tenant-made Service answers for it.
    host = f"cleo-pooler.{NS}.svc.cluster.local"
    assert values["PGHOST"] == host
    assert values[CLIENT_URL_KEY] == (
        f"postgresql://cleo_acme:{PASSWORD}@{host}:5432/cleo_acme?sslmode=disable"
    )


def test_clients_must_come_over_tls_with_the_poolers_own_certificate() -> None:
    tls = PoolerTls(key_pem="KEY", cert_pem="CERT")
    values = pooler_config_values(
        target=target(),
        pooler=PoolerSpec(),
        password=PASSWORD,
        client_password="C" * 43,
        tls=tls,
        namespace="cleo-x",
    )
    settings = ini_settings(values[INI_KEY])
    assert settings["client_tls_sslmode"] == "require"
    assert settings["client_tls_key_file"] == f"/etc/pgbouncer/{TLS_KEY}"
    assert settings["client_tls_cert_file"] == f"/etc/pgbouncer/{TLS_CERT}"
    assert (values[TLS_KEY], values[TLS_CERT]) == ("KEY", "CERT")
    # The workload verifies the pooler's own certificate, which names that host.
    assert values[CLIENT_URL_KEY].endswith(
        "?sslmode=verify-full&sslrootcert=/etc/cleo/pooler-ca/ca.crt"
    )
    assert values["client-ca.crt"] == "CERT"
    rendered = render_pooler(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        pooler=PoolerSpec(enabled=True),
        target=target(),
        password=PASSWORD,
        image=IMAGE,
        tls=tls,
    )
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    items = deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"]
    assert {"key": TLS_KEY, "path": TLS_KEY} in items
    assert {"key": TLS_CERT, "path": TLS_CERT} in items
    # Without a pair (the benchmark, the harness), clients are plain.
    assert "client_tls_sslmode" not in ini_settings(
        pooler_config_values(
            target=target(), pooler=PoolerSpec(), password=PASSWORD, namespace="cleo-x"
        )[INI_KEY]
    )


def test_the_pods_pass_restricted_and_mount_only_the_files_they_read() -> None:
    deployment = objects()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    [container] = pod["containers"]
    assert container["image"] == IMAGE.image
    assert container["command"] == ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] == {"memory": "128Mi"}
    assert pod["automountServiceAccountToken"] is False
    [volume] = pod["volumes"]
    # Not the client URL: the pooler's pods have no use for it.
    assert [i["key"] for i in volume["secret"]["items"]] == [INI_KEY, USERLIST_KEY, "ca.crt"]
    no_ca = objects(ca_pem=None)["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert [i["key"] for i in no_ca["secret"]["items"]] == [INI_KEY, USERLIST_KEY]


def test_two_replicas_by_default_spread_and_kept_by_a_budget_one_has_none() -> None:
    rendered = objects()
    spec = rendered["Deployment"]["spec"]
    assert spec["replicas"] == 2
    affinity = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    [term] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert rendered["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert "PodDisruptionBudget" not in objects(PoolerSpec(enabled=True, replicas=1))
    service = rendered["Service"]["spec"]
    assert service["ports"][0]["port"] == 5432
    assert service["selector"] == spec["selector"]["matchLabels"]


def config_hash(**kwargs: Any) -> str:
    password = kwargs.pop("password", PASSWORD)
    pooler = kwargs.pop("pooler", PoolerSpec(enabled=True))
    rendered = render_pooler(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        pooler=pooler,
        target=target(**kwargs),
        password=password,
        image=IMAGE,
    )
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    value: str = deployment["spec"]["template"]["metadata"]["annotations"][POOLER_HASH_ANNOTATION]
    return value


def test_the_config_hash_rolls_the_pods_on_a_new_password_site_or_pool() -> None:
    base = config_hash()
    assert config_hash() == base  # stable: a no-op reconcile writes nothing
    assert config_hash(password=PASSWORD[:-1] + "x") != base
    assert config_hash(host="pg2.example.internal") != base
    assert config_hash(pooler=PoolerSpec(enabled=True, pool_size=11)) != base
    # The hash is on the pod template, which viewers read: never the password itself.
    assert PASSWORD not in json.dumps(objects()["Deployment"])


def test_config_values_are_what_the_secret_holds() -> None:
    values = pooler_config_values(
        target=target(), pooler=PoolerSpec(), password=PASSWORD, namespace=NS
    )
    assert values == secret_values(objects()["Secret"])


# -- the workload's route ----------------------------------------------------------------


def workload_container(
    workload: dict[str, Any] = WORKLOAD, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    rendered = render_deployment(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        spec=spec_of(workload=workload),
        config_checksum=CHECKSUM,
        database_secret="cleo-database",
        **kwargs,
    )
    assert rendered is not None
    template = rendered["spec"]["template"]
    return template["spec"]["containers"][0], template["metadata"]["labels"]


def test_the_workload_goes_through_the_pooler_only_when_it_serves() -> None:
    direct, direct_labels = workload_container()
    assert "env" not in direct
    assert DATABASE_ROUTE_LABEL not in direct_labels
    pooled, labels = workload_container(pooler_secret=POOLER_NAME)
    env = {e["name"]: e for e in pooled["env"]}
    assert env["DATABASE_URL"] == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": POOLER_NAME, "key": CLIENT_URL_KEY}},
    }
    assert env["PGHOST"]["valueFrom"]["secretKeyRef"] == {"name": POOLER_NAME, "key": "PGHOST"}
    assert env["PGPORT"]["value"] == "5432"
    assert env["PGSSLMODE"]["value"] == "verify-full"  # the pooler's own certificate
    assert labels[DATABASE_ROUTE_LABEL] == "pooler"
    # The pooler's client credential, not the role's password (the pooler refuses it), and
    # the pooler's own certificate as the only root (not the site's CA).
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": POOLER_NAME,
        "key": CLIENT_PASSWORD_KEY,
    }
    assert env["PGSSLROOTCERT"] == {"name": "PGSSLROOTCERT", "value": "/etc/cleo/pooler-ca/ca.crt"}
    assert {"name": "pooler-ca", "mountPath": "/etc/cleo/pooler-ca", "readOnly": True} in pooled[
        "volumeMounts"
    ]
    # The database Secret stays in envFrom: PGUSER and PGDATABASE come from it.
    assert {"secretRef": {"name": "cleo-database"}} in pooled["envFrom"]


def test_a_variable_the_spec_sets_itself_is_left_to_the_spec() -> None:
    own = {**WORKLOAD, "env": [{"name": "PGHOST", "value": "elsewhere"}]}
    container, _ = workload_container(own, pooler_secret=POOLER_NAME)
    env = container["env"]
    assert [e for e in env if e["name"] == "PGHOST"] == [{"name": "PGHOST", "value": "elsewhere"}]
