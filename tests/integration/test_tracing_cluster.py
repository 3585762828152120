"""Traces of real reconciles (observability/tracing.py): a real API server, a real
PostgreSQL server, spans read back from the in-memory exporter behind the operator's own
sanitizing processor (what would have been sent).

- A tenant reconcile is one ``reconcile CleoTenant`` span with a child per Kubernetes API
  request and per SQL statement (the psycopg instrumentation, through the site pools and
  lanes), and no secret in any span: not the tenant's password (nor its SCRAM verifier,
  which the ``ALTER ROLE`` statement carries), not the keyring, not the operator's keys.
- A scheduled CleoBackup's CronJob carries ``TRACEPARENT`` and the ``OTEL_*`` exporter
  settings when tracing is on; a second reconcile writes nothing (the kept traceparent),
  and a spec change gives the CronJob the trace of the reconcile that made the change.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.restore import restore_archive
from cleo_operator.backup.runner import run_backup
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, CRON_JOB, NAMESPACE, TENANT
from cleo_operator.observability.tracing import (
    context_from_environment,
    reconcile_span,
    span,
    traceparent,
)
from cleo_operator.reconcile.database import ROTATE_ANNOTATION, DatabasePart
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.keys import ensure_operator_keys
from cleo_operator.reconcile.tenant import TenantReconciler
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, backup_manifest, tenant_manifest
from tests.harness.tracing import Spans, traced
from tests.integration.backup_cluster_support import API_SERVER, RUNNER_IMAGE, write_keyring
from tests.integration.backup_support import create_database, drop_database
from tests.integration.keys_harness import SecretScanner, create_namespace, delete_namespace
from tests.integration.tenant_database_support import (
    drop_tenant_objects,
    secret_of,
    secret_values,
    server_databases,
    unique,
)

pytestmark = RECONCILERS_ALONE

COLLECTOR = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example:4318"}


def _attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def _descendants(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    found: list[ReadableSpan] = []
    todo = [root]
    while todo:
        parent = todo.pop()
        assert parent.context is not None
        below = [
            s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]
        found += below
        todo += below
    return found


def _reconcile(reconciler: TenantReconciler, name: str) -> Any:
    # As the tenant's loop runs it (handlers/loop.py).
    with reconcile_span("CleoTenant", name):
        return reconciler.reconcile(name)


@pytest.fixture
def tenant_name(kube: KubeClient, postgres_server: PostgresServer) -> Iterator[str]:
    name = unique("tr")
    yield name
    kube.delete(TENANT, name)
    kube.delete(NAMESPACE, f"cleo-{name}")
    drop_tenant_objects(postgres_server, name)


@pytest.mark.security
def test_a_tenant_reconcile_is_a_span_with_api_and_sql_children_and_no_secret(
    kube: KubeClient,
    crds_installed: None,
    postgres_server: PostgresServer,
    tenant_name: str,
) -> None:
    del crds_installed
    operator_ns = unique("tr-op")
    create_namespace(kube, operator_ns)
    now = datetime.datetime.now(datetime.UTC)
    try:
        with (
            traced(COLLECTOR, instrument_sql=True) as spans,
            # Built inside: the site pools' connections are made with tracing on.
            server_databases(kube, postgres_server, prefix="tr-db", sites={"default": {}}) as dbs,
        ):
            keys = ensure_operator_keys(kube, operator_namespace=operator_ns, kek_dir=None, now=now)
            reconciler = TenantReconciler(
                kube,
                parts=[EncryptionPart(kube, keys), DatabasePart(dbs)],
                operator_namespace=operator_ns,
            )
            kube.create(
                tenant_manifest(
                    tenant_name, {"workload": {"image": IMAGE}, "database": {"enabled": True}}
                )
            )

            def reported() -> bool:
                _reconcile(reconciler, tenant_name)
                tenant = kube.get(TENANT, tenant_name)
                return bool(tenant and (tenant.get("status") or {}).get("database"))

            wait_for(reported, timeout=60, interval=0.5, what="the tenant's first status")
            # A password rotation: ALTER ROLE ... PASSWORD with the new verifier.
            kube.patch_merge(
                TENANT, tenant_name, {"metadata": {"annotations": {ROTATE_ANNOTATION: "now"}}}
            )
            _reconcile(reconciler, tenant_name)
            reconciler.close()
            finished = spans.finished()
            _check_tenant_trace(spans, tenant_name)
            scanner = SecretScanner()
            scanner.add_cluster_keys(kube, operator_ns, [f"cleo-{tenant_name}"])
            values = secret_values(secret_of(kube, f"cleo-{tenant_name}"))
            for key in ("PGPASSWORD", "DATABASE_URL"):
                scanner.add(key, values[key])
            scanner.add("the site admin password", postgres_server.password)
            assert len(scanner.needles) > 4
            text = "\n".join(spans.texts())
            scanner.assert_clean("the spans", text)
            assert "SCRAM-SHA-256" not in text
            assert len(finished) > 10
    finally:
        delete_namespace(kube, operator_ns)


def _check_tenant_trace(spans: Spans, tenant: str) -> None:
    reconciles = spans.named("reconcile CleoTenant")
    assert reconciles
    first = reconciles[0]
    assert _attributes(first)["cleo.name"] == tenant
    assert _attributes(first)["cleo.writes"] > 0
    assert isinstance(_attributes(first)["cleo.generation"], int)
    api: list[Any] = []
    sql: list[Any] = []
    for reconcile in reconciles:
        assert _attributes(reconcile)["cleo.outcome"] == "ok"
        trace_id = reconcile.context.trace_id
        for one in spans.finished():
            if one.context.trace_id != trace_id:
                continue
            attributes = _attributes(one)
            if "k8s.verb" in attributes:
                assert one.parent is not None
                assert one.parent.span_id == reconcile.context.span_id
                api.append(one)
            if (
                attributes.get("db.system") == "postgresql"
                or attributes.get("db.system.name") == "postgresql"
            ):
                sql.append(one)
    verbs = {(_attributes(s)["k8s.verb"], _attributes(s)["k8s.kind"]) for s in api}
    assert ("get", "CleoTenant") in verbs
    assert ("apply", "Deployment") in verbs
    assert all("http.response.status_code" in _attributes(s) for s in api)
    assert sql, "no SQL statement was traced"
    statements = [
        str(_attributes(s).get("db.statement") or _attributes(s).get("db.query.text") or "")
        for s in sql
    ]
    passwords = [s for s in statements if "PASSWORD" in s.upper() and "ALTER ROLE" in s.upper()]
    assert passwords, statements
    assert all(s.rstrip().endswith("PASSWORD ?") for s in passwords), passwords


# -- the backup runner's trace context ---------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _ids(context: Any) -> str:
    """The start of the W3C traceparent of a span (version, trace id, span id)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-"


def _runner_env(kube: KubeClient, namespace: str) -> dict[str, str]:
    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=namespace)
    assert cron is not None
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_the_runner_carries_the_trace_and_a_quiet_reconcile_writes_nothing(
    cluster: LocalCluster, kube: KubeClient, crds_installed: None
) -> None:
    from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings  # noqa: PLC0415
    from cleo_operator.render.backup import BackupPodSettings  # noqa: PLC0415

    del crds_installed
    tenant = f"trb-{secrets.token_hex(4)}"
    namespace = f"cleo-{tenant}"
    kube.create(tenant_manifest(tenant, {"paused": True, "database": {"enabled": True}}))
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    values = {"PGHOST": "db.example", "PGPORT": "5432", "PGDATABASE": "d", "PGUSER": "u"}
    values["PGPASSWORD"] = "not-a-real-password-0123456789abcdef"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-database", "namespace": namespace},
            "data": {k: _b64(v) for k, v in values.items()},
        }
    )
    write_keyring(kube, namespace)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "backups", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    kube.create(
        backup_manifest(
            "nightly",
            namespace,
            {
                "tenant": tenant,
                "schedule": "0 3 * * *",
                "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "c"}},
            },
        )
    )
    pod = BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER)
    reconciler = BackupReconciler(kube, settings=BackupSettings(pod=pod))

    def reconcile() -> Any:
        with reconcile_span("CleoBackup", "nightly", namespace) as record:
            reconciler.reconcile(namespace, "nightly")
        return record

    try:
        with traced(COLLECTOR):
            made = reconcile()
            env = _runner_env(kube, namespace)
            made_context = made.span.get_span_context()
            assert env["TRACEPARENT"].startswith(_ids(made_context))
            assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == (
                "http://collector.example:4318/v1/traces"
            )
            assert env["OTEL_SERVICE_NAME"] == "cleo-backup"
            assert made.tally.writes > 0

            # Status settles in a round or two; then a reconcile writes nothing at all,
            # although its own trace id differs from the CronJob's.
            wait_for(
                lambda: reconcile().tally.writes == 0,
                timeout=30,
                interval=0.2,
                what="a reconcile that writes nothing",
            )
            offset = cluster.audit_offset()
            quiet = reconcile()
            assert quiet.tally.writes == 0
            assert [
                e
                for e in cluster.audit_events(offset=offset)
                if (e.get("objectRef") or {}).get("namespace") == namespace
                and e["verb"] not in ("get", "list", "watch")
            ] == []
            assert _runner_env(kube, namespace)["TRACEPARENT"] == env["TRACEPARENT"]

            # A spec change rewrites the CronJob, with the trace of that reconcile.
            kube.patch_merge(BACKUP, "nightly", {"spec": {"suspend": True}}, namespace=namespace)
            changed = reconcile()
            changed_context = changed.span.get_span_context()
            assert _runner_env(kube, namespace)["TRACEPARENT"].startswith(_ids(changed_context))
        # Tracing off: the runner's tracing variables go with the next write, and no
        # reconcile after that one writes.
        reconcile()
        assert not {"TRACEPARENT", "OTEL_SERVICE_NAME"} & set(_runner_env(kube, namespace))
        wait_for(lambda: reconcile().tally.writes == 0, timeout=30, interval=0.2, what="quiet")
    finally:
        reconciler.close()
        kube.delete(TENANT, tenant)
        kube.delete(NAMESPACE, namespace)


# -- a backup run and a restore under the reconcile's trace -----------------------------------


def test_a_backup_run_and_a_restore_are_steps_under_the_traceparent(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    source, target = f"trs_{secrets.token_hex(4)}", f"trt_{secrets.token_hex(4)}"
    create_database(postgres_server, source)
    create_database(postgres_server, target)
    try:
        with psycopg.connect(postgres_server.dsn(source), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int primary key, note text)")
            conn.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g")
        keyring = Keyring.generate(datetime.datetime.now(datetime.UTC))
        storage = LocalStorage(tmp_path / "backups")
        with traced(COLLECTOR, instrument_sql=True) as spans:
            with span("reconcile CleoBackup") as reconcile:
                parent = traceparent()
            # In the runner's process: TRACEPARENT from its env.
            context = context_from_environment({"TRACEPARENT": parent or ""})
            with span("backup run", context=context):
                result = run_backup(
                    source=ConnectionInfo.from_dsn(postgres_server.dsn(source)),
                    tenant="acme",
                    storage=storage,
                    keyring=keyring,
                )
            with span("restore run", context=context):
                restore_archive(
                    storage=storage,
                    backup_id=result.backup_id,
                    keyring=keyring,
                    target=ConnectionInfo.from_dsn(postgres_server.dsn(target)),
                    allow_privileged_target=True,
                    audited=False,
                )
            finished = spans.finished()
            text = "\n".join(spans.texts())
        trace_id = reconcile.get_span_context().trace_id
        names = {
            s.name for s in finished if s.context is not None and s.context.trace_id == trace_id
        }
        assert {
            "backup run",
            "backup",
            "backup key",
            "backup snapshot",
            "backup dump, encrypt, upload",
            "backup manifest",
            "restore run",
            "restore",
            "restore manifest",
            "restore check target",
            "restore download, decrypt",
            "restore pg_restore",
        } <= names, names
        (run,) = [s for s in finished if s.name == "backup run"]
        assert run.parent is not None
        assert run.parent.span_id == reconcile.get_span_context().span_id
        (backup,) = [s for s in finished if s.name == "backup"]
        assert dict(backup.attributes or {})["cleo.backup_id"] == result.backup_id
        # The table statistics run in a thread of their own: their statements are still
        # in the run's trace, under the run (not roots of traces of their own).
        under_run = _descendants(finished, run)
        statistics = [
            s
            for s in finished
            if "FROM ONLY" in str(dict(s.attributes or {}).get("db.statement", ""))
        ]
        assert statistics, sorted(s.name for s in finished)
        assert all(s in under_run for s in statistics), [(s.name, s.parent) for s in statistics]
        assert postgres_server.password not in text
        for key in keyring.keys:
            assert key.material.hex() not in text
            assert base64.b64encode(key.material).decode() not in text
    finally:
        drop_database(postgres_server, source)
        drop_database(postgres_server, target)


# -- a tenant's creation trace: only its own backups join it ---------------------------------


@pytest.mark.security
def test_a_backup_joins_only_its_own_tenants_creation_trace(
    kube: KubeClient, crds_installed: None
) -> None:
    from cleo_operator.observability.creation_traces import CreationTraces  # noqa: PLC0415
    from cleo_operator.reconcile.backup import BackupReconciler  # noqa: PLC0415

    del crds_installed
    own, other = f"trc-{secrets.token_hex(4)}", f"trc-{secrets.token_hex(4)}"
    namespace = f"cleo-{own}"
    destination = {"type": "pvc", "pvc": {"claimName": "backups", "path": "c"}}
    uids = {
        name: str(
            kube.create(tenant_manifest(name, {"paused": True, "database": {"enabled": True}}))[
                "metadata"
            ]["uid"]
        )
        for name in (own, other)
    }
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    # A tenant admin of `own` makes backups in its namespace: one of its own tenant, and one
    # naming the other tenant (which the reconciler refuses: WrongNamespace).
    kube.create(backup_manifest("mine", namespace, {"tenant": own, "destination": destination}))
    kube.create(backup_manifest("theirs", namespace, {"tenant": other, "destination": destination}))
    creations = CreationTraces()
    reconciler = BackupReconciler(kube, creation_traces=creations)
    try:
        with traced(COLLECTOR):
            # Only the other tenant is being created, even recorded (it never is: a refused
            # tenant is nobody's creation) with this namespace: nobody here joins it.
            with span("reconcile CleoTenant") as theirs:
                creations.begin(uids[other], name=other, namespace=namespace)
            assert creations.watching(namespace)
            assert reconciler.trace_parent(namespace, "theirs") is None
            assert reconciler.trace_parent(namespace, "mine") is None

            with span("reconcile CleoTenant") as mine:
                creations.begin(uids[own], name=own, namespace=namespace)
            parent = reconciler.trace_parent(namespace, "mine")
            assert parent is not None
            joined = trace.get_current_span(parent).get_span_context()
            assert joined.span_id == mine.get_span_context().span_id
            assert joined.trace_id != theirs.get_span_context().trace_id
            assert reconciler.trace_parent(namespace, "theirs") is None
            assert reconciler.trace_parent(namespace, "missing") is None
    finally:
        reconciler.close()
        for name in (own, other):
            kube.delete(TENANT, name)
        kube.delete(NAMESPACE, namespace)


@pytest.mark.security
def test_a_tenants_creation_is_kept_until_it_is_ready_and_a_refused_tenant_is_none(
    kube: KubeClient, crds_installed: None
) -> None:
    from cleo_operator.observability.creation_traces import CreationTraces  # noqa: PLC0415

    del crds_installed
    name, squatter = f"trn-{secrets.token_hex(4)}", f"trn-{secrets.token_hex(4)}"
    namespace = f"cleo-{name}"
    creations = CreationTraces()
    reconciler = TenantReconciler(kube, creation_traces=creations)

    def reconcile(tenant: str) -> tuple[Any, Any]:
        with reconcile_span("CleoTenant", tenant) as record:  # as the tenant's loop runs it
            result = reconciler.reconcile(tenant)
        return record.span.get_span_context(), result

    def uid(tenant: str) -> str:
        obj = kube.get(TENANT, tenant)
        assert obj is not None
        return str(obj["metadata"]["uid"])

    def kept(tenant: str) -> int | None:
        parent = creations.parent(uid(tenant), namespace=namespace)
        return None if parent is None else trace.get_current_span(parent).get_span_context().span_id

    kube.create(tenant_manifest(name, {"workload": {"image": IMAGE}}))
    try:
        with traced(COLLECTOR):
            first, result = reconcile(name)
            assert not result.ready
            assert kept(name) == first.span_id

            # A tenant that names the same namespace is refused: nobody's creation.
            kube.create(
                tenant_manifest(squatter, {"namespace": namespace, "workload": {"image": IMAGE}})
            )
            _, refused = reconcile(squatter)
            assert not refused.ready
            assert kept(squatter) is None
            assert creations.count() == 1

            # Later rounds keep the first round's span; Ready forgets it.
            def ready() -> bool:
                _, later = reconcile(name)
                if not later.ready:
                    assert kept(name) == first.span_id
                return bool(later.ready)

            wait_for(ready, timeout=60, interval=0.5, what="the tenant Ready")
            assert kept(name) is None
            assert creations.count() == 0
    finally:
        reconciler.close()
        kube.delete(TENANT, squatter)
        kube.delete(TENANT, name)
        kube.delete(NAMESPACE, namespace)
