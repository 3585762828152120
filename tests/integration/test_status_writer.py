"""The status writer against a real API server: preconditions, conflicts, no-op writes.

A CleoBackup's status has three writers (the reconciler's keys, the runs' keys, Kopf's
`status.kopf`), which is what the writer exists for.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.kube.status import update_status, write_status
from cleo_operator.reconcile.backup_status import RECONCILER_KEYS, RUN_KEYS
from e2e.cluster import LocalCluster
from tests.unit.test_api_backup import GOOD as GOOD_BACKUP

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

NS = "status-writer"
KOPF = {"progress": {"create_fn": {"started": "2026-03-01T12:00:00Z", "retries": 1}}}


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster, crds_installed: None) -> str:
    del crds_installed
    cluster.kubectl("create", "namespace", NS)
    return NS


@pytest.fixture
def backup(kube: KubeClient, namespace: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A CleoBackup whose status holds Kopf's bookkeeping, as Kopf leaves it."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    kube.create(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": name, "namespace": namespace},
            "spec": copy.deepcopy(GOOD_BACKUP),
        }
    )
    kube.patch_merge(
        BACKUP, name, {"status": {"kopf": KOPF}}, namespace=namespace, subresource="status"
    )
    yield name
    kube.delete(BACKUP, name, namespace=namespace)


def _read(kube: KubeClient, name: str) -> KubeObject:
    obj = kube.get(BACKUP, name, namespace=NS)
    assert obj is not None
    return obj


def _status_writes() -> float:
    labels = {"verb": "patch-status", "resource": BACKUP.plural}
    return REGISTRY.get_sample_value("cleo_operator_api_writes_total", labels) or 0.0


def _run(job: str) -> dict[str, Any]:
    return {"startTime": "2026-03-01T03:00:00Z", "succeeded": True, "reason": "Done", "job": job}


def _add_run(job: str) -> Any:
    """A mutation that depends on what it reads: it adds an entry to the history."""

    def mutate(obj: KubeObject) -> dict[str, Any]:
        history = list((obj.get("status") or {}).get("history") or [])
        return {"history": [*history, _run(job)]}

    return mutate


def test_a_stale_version_is_refused_and_the_writer_reads_again(
    kube: KubeClient, backup: str
) -> None:
    stale = _read(kube, backup)
    # Another writer gets in first, from the same read.
    first = update_status(
        kube, BACKUP, backup, _add_run("a"), owned_keys=RUN_KEYS, namespace=NS, read=stale
    )
    assert first is not None
    # The API server refuses the stale version itself...
    with pytest.raises(KubeError) as refused:
        kube.patch_merge(
            BACKUP,
            backup,
            {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "status": {}},
            namespace=NS,
            subresource="status",
        )
    assert refused.value.conflict
    # ...so the writer with the stale read gets 409, reads again and adds to what is there.
    writes = _status_writes()
    second = update_status(
        kube, BACKUP, backup, _add_run("b"), owned_keys=RUN_KEYS, namespace=NS, read=stale
    )
    assert second is not None
    assert _status_writes() - writes == 2  # the refused one and the one applied
    status = _read(kube, backup)["status"]
    assert [r["job"] for r in status["history"]] == ["a", "b"]
    assert status["kopf"] == KOPF


def test_the_reconciler_s_keys_and_the_runs_never_remove_each_other(
    kube: KubeClient, backup: str
) -> None:
    stale = _read(kube, backup)
    update_status(kube, BACKUP, backup, _add_run("a"), owned_keys=RUN_KEYS, namespace=NS)
    desired = {"observedGeneration": 1, "phase": "Scheduled", "conditions": []}
    assert write_status(kube, BACKUP, stale, desired, owned_keys=RECONCILER_KEYS) is not None
    status = _read(kube, backup)["status"]
    assert status["phase"] == "Scheduled"
    assert [r["job"] for r in status["history"]] == ["a"]
    assert status["kopf"] == KOPF


def test_a_no_op_writes_nothing(kube: KubeClient, backup: str) -> None:
    desired = {"observedGeneration": 1, "phase": "Scheduled", "conditions": []}
    write_status(kube, BACKUP, _read(kube, backup), desired, owned_keys=RECONCILER_KEYS)
    before = _read(kube, backup)
    writes = _status_writes()
    assert write_status(kube, BACKUP, before, desired, owned_keys=RECONCILER_KEYS) is None
    assert (
        update_status(
            kube, BACKUP, backup, lambda _: dict(desired), owned_keys=RECONCILER_KEYS, namespace=NS
        )
        is None
    )
    assert _status_writes() == writes
    after = _read(kube, backup)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["kopf"] == KOPF


def test_kopf_s_keys_survive_a_writer_that_owns_everything_else(
    kube: KubeClient, backup: str
) -> None:
    every_key = RECONCILER_KEYS | RUN_KEYS
    update_status(kube, BACKUP, backup, _add_run("a"), owned_keys=RUN_KEYS, namespace=NS)
    # Nothing desired: every owned key goes, Kopf's stays.
    write_status(kube, BACKUP, _read(kube, backup), {}, owned_keys=every_key)
    assert _read(kube, backup)["status"] == {"kopf": KOPF}
