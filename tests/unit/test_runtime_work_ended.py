"""The graceful stop's wait (handlers/registry.py `Runtime.work_ended`, used by cli/run.py
`hand_over`): the leader gives its Lease up only once no reconcile and no database
operation of it runs any more; real thread pools, real lanes, FakeKube for the API server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cleo_operator.data.pool import SitePools
from cleo_operator.data.sites import AdminCredentials
from cleo_operator.failover.automatic import AutomaticFailover
from cleo_operator.handlers.loop import ReconcileLoops
from cleo_operator.handlers.registry import Runtime
from cleo_operator.handlers.settings import OperatorConfig, Rechecks
from cleo_operator.reconcile.backup import BackupReconciler
from cleo_operator.reconcile.failover import FailoverReconciler
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.reconcile.tenant_databases import TenantDatabases
from tests.harness.fake_kube import FakeKube


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    kube = FakeKube()
    credentials = AdminCredentials(user="admin", password="unused-here")
    pools = SitePools({}, credentials=lambda _site: credentials)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reconcile")
    made = Runtime(
        config=OperatorConfig(),
        kube=kube,
        executor=executor,
        tenants=ReconcileLoops(kind="CleoTenant", executor=executor, resync_seconds=30),
        tenant_reconciler=TenantReconciler(kube),
        databases=TenantDatabases(kube, pools),
        backups=ReconcileLoops(kind="CleoBackup", executor=executor, resync_seconds=30),
        backup_reconciler=BackupReconciler(kube),
        failovers=ReconcileLoops(kind="CleoFailover", executor=executor, resync_seconds=30),
        failover_reconciler=FailoverReconciler(kube, pools),
        automatic_failover=AutomaticFailover(kube, pools),
        rechecks=Rechecks(),
    )
    yield made
    made.executor.shutdown(wait=False, cancel_futures=True)
    made.databases.close()
    made.backup_reconciler.close()
    made.automatic_failover.close()


def test_the_wait_ends_only_when_reconciles_and_database_operations_ended(
    runtime: Runtime,
) -> None:
    reconcile_go, operation_go = threading.Event(), threading.Event()
    try:
        runtime.executor.submit(reconcile_go.wait, 10)
        runtime.databases._lanes.submit("eu", 1, lambda: operation_go.wait(10))
        # What Kopf's cleanup handler does first (handlers/registry.py `shutdown`).
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        runtime.databases.close()
        started = time.monotonic()
        assert not runtime.work_ended(0.3), "a reconcile and a database operation still run"
        assert time.monotonic() - started < 5
        reconcile_go.set()
        assert not runtime.work_ended(0.3), "a database operation still runs"
        operation_go.set()
        assert runtime.work_ended(5)
    finally:
        reconcile_go.set()
        operation_go.set()


def test_an_idle_runtime_has_ended_at_once_even_before_kopf_s_cleanup(runtime: Runtime) -> None:
    runtime.executor.submit(lambda: None).result(5)
    started = time.monotonic()
    assert runtime.work_ended(5)
    assert time.monotonic() - started < 2
