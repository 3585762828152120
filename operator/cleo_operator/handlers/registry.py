"""The Kopf registry of cleo-operator: every handler, registered explicitly.

An explicit `kopf.OperatorRegistry` (instead of Kopf's global one) keeps importing this
module free of side effects and lets tests run an operator with exactly these handlers.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf
from opentelemetry import context as otel_context

from cleo_operator.core.errors import CleoError
from cleo_operator.core.threads import executors_ended
from cleo_operator.failover.automatic import AutomaticFailover, AutomaticSettings
from cleo_operator.failover.procedure import FailoverSettings
from cleo_operator.failover.samples import LagSamples
from cleo_operator.handlers.loop import ReconcileLoops
from cleo_operator.handlers.settings import OperatorConfig, Rechecks, apply_kopf_settings
from cleo_operator.kube.apiserver import find_api_server_cidrs
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import CRON_JOB, JOB, TENANT_CHILDREN
from cleo_operator.observability.creation_traces import CreationTraces
from cleo_operator.observability.logs import logging_object
from cleo_operator.observability.tracing import reconcile_span
from cleo_operator.reconcile.automatic_failover import AutomaticFailoverPart
from cleo_operator.reconcile.backup import WATCHED_CHILDREN as BACKUP_CHILDREN
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.reconcile.database import (
    DatabasePart,
    DatabaseSettings,
    TenantDatabases,
    rotation_request_pending,
)
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.failover import FailoverReconciler
from cleo_operator.reconcile.final_backup import FinalBackup
from cleo_operator.reconcile.keys import OperatorKeys
from cleo_operator.reconcile.migrations import MigrationsPart, retry_request_pending
from cleo_operator.reconcile.pooler import PoolerPart, PoolerSettings
from cleo_operator.reconcile.pull_secrets import check_sources
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.reconcile.tenant_parts import TenantPart
from cleo_operator.reconcile.tracing_settings import TracingSettings
from cleo_operator.render.backup import BACKUP_LABEL
from cleo_operator.render.meta import GROUP, MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from cleo_operator.render.rbac import OperatorAccess

VERSION = "v1alpha1"
CHILD_LABELS = {MANAGED_BY_LABEL: MANAGED_BY}

# Every kind of child a tenant has; an event on any of them (labelled as ours) wakes the
# tenant's loop, which is how a child edited or deleted by hand is put back in seconds.
# Except Secrets: watching them (even with a label selector) needs list and watch of every
# Secret of the cluster, kube-system's included, which is the read no bug of the operator
# may ever have; a Secret of ours deleted by hand comes back at the next resync (tenant
# admins cannot touch them: the tenant-protection admission policy).
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = tuple(
    (k.group, k.version, k.plural) for k in TENANT_CHILDREN
)


def tenant_parts(
    kube: KubeClient,
    *,
    keys: OperatorKeys,
    databases: TenantDatabases,
    automatic: AutomaticFailover,
    operator_namespace: str,
    pooler_settings: PoolerSettings,
) -> list[TenantPart]:
    """The tenant reconcile's parts, in the order they run (each round, before the
    Deployment and the other children are applied: a part's hold_reason or
    workload_image decides the Deployment of the same round)."""
    return [
        # Encryption first: its Secrets and the keyring must exist before the workload
        # that reads them, and both feed the Deployment's checksum.
        EncryptionPart(kube, keys),
        DatabasePart(databases),
        # After the database: it renders from the password the role has now.
        PoolerPart(
            kube, databases, operator_namespace=operator_namespace, settings=pooler_settings
        ),
        # Before the migrations: a tenant's failover never waits on its migration (a part
        # that raises ends the tenant's round).
        AutomaticFailoverPart(automatic),
        # After the database: its Job reads the credentials Secret.
        MigrationsPart(kube),
    ]


@dataclass
class Runtime:
    """Everything the handlers share for the life of the operator process."""

    config: OperatorConfig
    kube: KubeClient
    executor: ThreadPoolExecutor
    tenants: ReconcileLoops
    tenant_reconciler: TenantReconciler
    databases: TenantDatabases
    backups: ReconcileLoops
    backup_reconciler: BackupReconciler
    failovers: ReconcileLoops
    failover_reconciler: FailoverReconciler
    automatic_failover: AutomaticFailover
    rechecks: Rechecks

    def work_ended(self, timeout: float) -> bool:
        """After Kopf stopped (its cleanup handler shut the pools down): wait until no
        reconcile, backup verification or database operation runs any more, `timeout`
        seconds at most; False when some still run. The leader gives its lease up only
        then (cli/run.py): a Kubernetes write of such work is fenced, its database work
        ends only with the process."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        reconciles = executors_ended([self.executor], left())
        verifications = self.backup_reconciler.wait_for_verifications(left())
        operations = self.databases.operations_ended(left())
        return reconciles and verifications and operations

    @classmethod
    def create(cls, config: OperatorConfig, kube: KubeClient, keys: OperatorKeys) -> Runtime:
        """Build everything; raises SiteConfigError for a broken PostgreSQL site config and
        ValueError (naming the variable) for a broken setting (backups, rechecks, tracing),
        or a registry Secret it names that is missing from the operator's namespace."""
        executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="reconcile")
        # With deletionPolicy Delete, a tenant that has backups gets one last backup before
        # its database is dropped.
        databases = TenantDatabases.from_environment(kube, before_drop=FinalBackup(kube))
        backup_settings = BackupSettings.from_environment()
        rechecks = Rechecks.from_environment()
        tracing = TracingSettings.from_environment()
        # The registry Secrets to copy must be in the operator's namespace (the setting
        # used to name Secrets of the tenant namespaces): a missing one stops the start.
        check_sources(
            kube,
            backup_settings.pull_secret_sources,
            operator_namespace=config.operator_namespace,
        )
        if not backup_settings.pod.api_server_cidrs:
            backup_settings = backup_settings.with_api_server(find_api_server_cidrs(kube))
        # One record of replication lag samples: automatic failovers stamp the last one
        # on the CleoFailover they create, and the procedure estimates the RPO from it.
        lag_samples = LagSamples()
        automatic = AutomaticFailover(
            kube,
            databases.pools,
            lag_samples=lag_samples,
            settings=AutomaticSettings(healthy_recheck_seconds=rechecks.healthy_primary_seconds),
        )
        pooler_settings = PoolerSettings.from_environment()
        # A tenant's creation trace, which its first backup's reconcile joins (in memory).
        creation_traces = CreationTraces()
        backup_reconciler = BackupReconciler.from_databases(
            kube,
            databases,
            settings=backup_settings,
            operator_namespace=config.operator_namespace,
            creation_traces=creation_traces,
        )

        def backup_trace_parent(key: str) -> otel_context.Context | None:
            namespace, _, name = key.partition("/")
            return backup_reconciler.trace_parent(namespace, name)

        failover_reconciler = FailoverReconciler.from_environment(
            kube,
            pools=databases.pools,
            lag_samples=lag_samples,
            settings=FailoverSettings(
                credentials_secret=DatabaseSettings().secret_name,
                operator_namespace=config.operator_namespace,
                cluster_domain=pooler_settings.cluster_domain,
            ),
        )
        return cls(
            config=config,
            kube=kube,
            executor=executor,
            tenants=ReconcileLoops(
                kind="CleoTenant", executor=executor, resync_seconds=config.resync_seconds
            ),
            tenant_reconciler=TenantReconciler(
                kube,
                operator_access=(
                    OperatorAccess(role=config.tenant_role, username=config.identity)
                    if config.identity
                    else None
                ),
                parts=tenant_parts(
                    kube,
                    keys=keys,
                    databases=databases,
                    automatic=automatic,
                    operator_namespace=config.operator_namespace,
                    pooler_settings=pooler_settings,
                ),
                operator_namespace=config.operator_namespace,
                refused_recheck_seconds=rechecks.refused_seconds,
                workload_tracing=tracing.workloads,
                creation_traces=creation_traces,
            ),
            databases=databases,
            backups=ReconcileLoops(
                kind="CleoBackup",
                executor=executor,
                resync_seconds=config.resync_seconds,
                trace_parent=backup_trace_parent,
            ),
            backup_reconciler=backup_reconciler,
            failovers=ReconcileLoops(
                kind="CleoFailover", executor=executor, resync_seconds=config.resync_seconds
            ),
            failover_reconciler=failover_reconciler,
            automatic_failover=automatic,
            rechecks=rechecks,
        )


def _tenant_of(labels: Any) -> str | None:
    value = (labels or {}).get(TENANT_LABEL)
    return str(value) if value else None


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    """Register every handler of the operator on a fresh registry."""
    registry = kopf.OperatorRegistry()
    config = runtime.config

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        apply_kopf_settings(
            settings,
            config,
            child_resources=CHILD_RESOURCES,
            # Jobs made by a CronJob carry the backup's label, not our managed-by label.
            extra_selectors={(k.group, k.version, k.plural): BACKUP_LABEL for k in (JOB, CRON_JOB)},
        )
        # /metrics is served by `cleo-operator run` from the start, standbys' too.

    @kopf.on.cleanup(registry=registry)
    def shutdown(**_: Any) -> None:
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        runtime.tenant_reconciler.close()
        runtime.backup_reconciler.close()
        runtime.automatic_failover.close()
        runtime.failover_reconciler.close()
        runtime.databases.close()

    @kopf.on.probe(id="tenants", registry=registry)
    def tenants_probe(**_: Any) -> int:
        return len(runtime.tenants)

    # -- CleoTenant --------------------------------------------------------------------

    @kopf.daemon(GROUP, VERSION, "cleotenants", registry=registry, cancellation_timeout=1.0)
    async def tenant_loop(name: str, **_: Any) -> None:
        await runtime.tenants.run(
            name, functools.partial(runtime.tenant_reconciler.reconcile, name)
        )

    @kopf.on.event(GROUP, VERSION, "cleotenants", registry=registry)
    def tenant_event(name: str, body: kopf.Body, **_: Any) -> None:
        status = body.get("status") or {}
        # Our own status writes come back as events too; only spec changes (and a rotation
        # asked for with an annotation) need a reconcile.
        spec_changed = body.metadata.get("generation") != status.get("observedGeneration")
        rotation = rotation_request_pending(
            body.metadata.get("annotations"), status.get("database")
        )
        retry = retry_request_pending(body.metadata.get("annotations"), status.get("migrations"))
        if spec_changed or rotation or retry:
            runtime.tenants.wake(name)

    @kopf.on.delete(GROUP, VERSION, "cleotenants", registry=registry)
    async def tenant_deleted(name: str, logger: kopf.Logger, **_: Any) -> None:
        def finalize() -> bool:
            with (
                logging_object("CleoTenant", name),  # names the tenant in its log lines
                reconcile_span("CleoTenant", name, action="finalize") as record,
            ):
                try:
                    done = runtime.tenant_reconciler.finalize(name)
                except CleoError as exc:
                    record.outcome = "retry" if exc.retryable else "error"
                    raise
                record.outcome = None if done else "retry"
                return done

        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(runtime.executor, finalize)
        if not done:
            # What it waits for (a final backup, the namespace) is on the tenant's Ready
            # condition, reason Deleting (reconcile/tenant_deletion.py).
            raise kopf.TemporaryError(
                "the deletion is not finished: see the CleoTenant's Ready condition",
                delay=runtime.rechecks.deletion_seconds,
            )
        logger.info("tenant %s finalized", name)

    # -- children: any change to something we manage wakes its tenant ----------------------

    def child_event(labels: kopf.Labels, **_: Any) -> None:
        tenant = _tenant_of(labels)
        if tenant:
            runtime.tenants.wake(tenant)

    for group, version, plural in CHILD_RESOURCES:
        kopf.on.event(
            group, version, plural, labels=CHILD_LABELS, registry=registry, id=f"wake/{plural}"
        )(child_event)

    # -- CleoBackup ---------------------------------------------------------------------

    @kopf.daemon(GROUP, VERSION, "cleobackups", registry=registry, cancellation_timeout=1.0)
    async def backup_loop(namespace: str | None, name: str, **_: Any) -> None:
        assert namespace is not None  # CleoBackup is namespaced
        await runtime.backups.run(
            f"{namespace}/{name}",
            functools.partial(runtime.backup_reconciler.reconcile, namespace, name),
        )

    @kopf.on.event(GROUP, VERSION, "cleobackups", registry=registry)
    def backup_event(namespace: str | None, name: str, type: str, **_: Any) -> None:
        assert namespace is not None  # CleoBackup is namespaced
        # Runner pods write lastBackup and history: that too needs a reconcile (verification,
        # conditions). The reconcile writes only when something changed, so waking on every
        # event ends after one quiet round.
        if type == "DELETED":
            runtime.backup_reconciler.forget(namespace, name)
        runtime.backups.wake(f"{namespace}/{name}")

    def backup_child_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        backup = (labels or {}).get(BACKUP_LABEL)
        if backup and namespace:
            runtime.backups.wake(f"{namespace}/{backup}")

    for group, version, plural in BACKUP_CHILDREN:
        kopf.on.event(
            group,
            version,
            plural,
            labels={BACKUP_LABEL: kopf.PRESENT},
            registry=registry,
            id=f"wake-backup/{plural}",
        )(backup_child_event)

    # -- CleoFailover -------------------------------------------------------------------

    @kopf.daemon(GROUP, VERSION, "cleofailovers", registry=registry, cancellation_timeout=1.0)
    async def failover_loop(namespace: str | None, name: str, **_: Any) -> None:
        assert namespace is not None  # CleoFailover is namespaced
        await runtime.failovers.run(
            f"{namespace}/{name}",
            functools.partial(runtime.failover_reconciler.reconcile, namespace, name),
        )

    @kopf.on.event(GROUP, VERSION, "cleofailovers", registry=registry)
    def failover_event(namespace: str | None, name: str, **_: Any) -> None:
        runtime.failovers.wake(f"{namespace}/{name}")

    return registry
