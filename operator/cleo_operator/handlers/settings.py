"""Settings of the operator process, and how they map onto Kopf's settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import kopf

from cleo_operator.core.environment import seconds_setting
from cleo_operator.failover.automatic import HEALTHY_RECHECK_SECONDS
from cleo_operator.reconcile.tenant import REFUSED_RECHECK_SECONDS
from cleo_operator.render.meta import FINALIZER, GROUP, MANAGED_BY, MANAGED_BY_LABEL

REFUSED_RECHECK_ENV: Final = "CLEO_TENANT_REFUSED_RECHECK_SECONDS"
HEALTHY_RECHECK_ENV: Final = "CLEO_FAILOVER_HEALTHY_RECHECK_SECONDS"
DELETION_RECHECK_ENV: Final = "CLEO_TENANT_DELETION_RECHECK_SECONDS"
DELETION_RECHECK_SECONDS: Final = 2.0


@dataclass(frozen=True)
class OperatorConfig:
    """How this operator process runs; filled from the command line and environment."""

    namespaces: tuple[str, ...] = ()
    """Watch only these namespaces for namespaced resources; empty means cluster-wide."""
    operator_namespace: str = "cleo-system"
    """Where the operator's own objects live (key Secrets, for instance)."""
    workers: int = 8
    """Threads that run reconciles; bounds the concurrent API and database work."""
    resync_seconds: float = 300.0
    """Every tenant is reconciled at least this often, even when nothing signalled a change."""
    metrics_port: int = 8080
    """Port of the Prometheus /metrics endpoint; 0 turns it off."""
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    """Kopf's liveness endpoint; None turns it off."""
    standalone: bool = True
    """Run without Kopf peering: the leader Lease decides which replica runs the handlers
    (kube/leader.py, docs/install.md High availability)."""
    kek_dir: Path | None = None
    """Key-encryption keys from this directory (`CLEO_KEK_DIR`, a KMS or CSI mount) instead
    of the `cleo-kek` Secret in the operator's namespace."""
    tenant_role: str = "cleo-operator-tenant"
    """The ClusterRole holding the operator's rights in a tenant namespace, which it binds
    there itself (`CLEO_OPERATOR_TENANT_ROLE`; the chart's ``<release>-tenant``)."""
    identity: str | None = None
    """The user name the API server knows the operator by (found at start); the subject of
    its RoleBinding in each tenant namespace. None: no such binding (tests of parts)."""


@dataclass(frozen=True, kw_only=True)
class Rechecks:
    """How soon the operator looks again at what no event will wake it for.

    Each bounds how late something is noticed, and each look costs reads: shorter is
    quicker and busier. The defaults suit production; tests shorten them (what a test
    proves does not depend on the length, only on the operator looking again).
    """

    refused_seconds: float = REFUSED_RECHECK_SECONDS
    """A tenant refused its namespace: how soon a namespace handed over is taken up
    (``CLEO_TENANT_REFUSED_RECHECK_SECONDS``)."""
    healthy_primary_seconds: float = HEALTHY_RECHECK_SECONDS
    """A tenant with automatic failover whose primary is healthy: how late an outage is
    noticed, on top of its failoverDelay (``CLEO_FAILOVER_HEALTHY_RECHECK_SECONDS``)."""
    deletion_seconds: float = DELETION_RECHECK_SECONDS
    """A deleted tenant whose deletion waits (for its final backup, its namespace): how
    soon its finalizer checks again (``CLEO_TENANT_DELETION_RECHECK_SECONDS``)."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Rechecks:
        """From the variables above, each a number of seconds above 0; ValueError names
        the variable that is wrong."""
        env = os.environ if environ is None else environ
        return cls(
            refused_seconds=seconds_setting(
                env, REFUSED_RECHECK_ENV, default=REFUSED_RECHECK_SECONDS
            ),
            healthy_primary_seconds=seconds_setting(
                env, HEALTHY_RECHECK_ENV, default=HEALTHY_RECHECK_SECONDS
            ),
            deletion_seconds=seconds_setting(
                env, DELETION_RECHECK_ENV, default=DELETION_RECHECK_SECONDS
            ),
        )


class NoDiffBase(kopf.DiffBaseStorage):
    """Keep no "last handled configuration" on our objects.

    Kopf stores the last handled spec to compute diffs for on.create/on.update handlers.
    This operator has none: every kind is reconciled level-based by a daemon that compares
    desired and actual state, so the diff base would only cost a write per object and put
    a full copy of the spec (sealed secrets included) into an annotation, which is capped
    at 256 KiB and, when too large, blocks deletion (Kopf issue #1087).
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        del body
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        del body, patch, essence


def apply_kopf_settings(
    settings: kopf.OperatorSettings,
    config: OperatorConfig,
    *,
    child_resources: tuple[tuple[str, str, str], ...] = (),
    extra_selectors: Mapping[tuple[str, str, str], str] | None = None,
) -> None:
    """Our conventions for Kopf: the finalizer, annotation prefix, posting and workers."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only warnings and errors of handlers become Kubernetes Events; significant actions are
    # posted explicitly by the handlers so that Events stay meaningful.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = config.workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # Children are watched through a server-side label selector: the operator never
    # receives (or holds in memory) the Secrets and ConfigMaps of anyone else.
    for group, version, plural in child_resources:
        settings.watching.label_selectors[group, version, plural] = (
            f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        )
    for (group, version, plural), selector in (extra_selectors or {}).items():
        settings.watching.label_selectors[group, version, plural] = selector
