"""Keeping the runner's registry credentials copied into a tenant namespace, level-based.

Each backup reconcile of a tenant namespace calls `PullSecretCopies.sync`, which reads the
sources (the Secrets ``CLEO_BACKUP_IMAGE_PULL_SECRETS`` names, in the operator's namespace)
and the copies fresh and converges: a copy per usable source (`render.pull_secrets`: why
copies, why those names, why one type only), updated when its source changed, deleted when
its source is no longer named, no longer exists or is not registry credentials, and
nothing written when all is as it should be. The sources are not watched (the operator
watches no Secret), so a changed source reaches the copies on the next reconcile of a
backup in that namespace, at the latest after the resync period.

A source that cannot be copied is a condition on the CleoBackup (reasons
``ImagePullSecretMissing`` and ``ImagePullSecretInvalid``), never an exception. The runner
pods always name the copies of every configured source, so that the CronJob does not change
with the sources' state; the kubelet pulls without a pull secret that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cleo_operator.api.objects import KubeObject, ObjectRef, object_ref
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, SECRET
from cleo_operator.reconcile.children import converge_child
from cleo_operator.reconcile.status import Observation
from cleo_operator.render.meta import managed_by_operator
from cleo_operator.render.pull_secrets import (
    COPY_SELECTOR,
    PULL_SECRET_TYPE,
    backup_owner_reference,
    pull_secret_copy_name,
    pull_source_problem,
    render_pull_secret_copy,
)

__all__ = ["PullSecretCopies", "PullSecretSync"]


@dataclass
class PullSecretSync:
    """What one sync did, and what the runner pods name."""

    names: tuple[str, ...]
    """The copies the runner pods name (those of every configured source)."""
    problem: Observation | None = None
    """The first source that could not be copied, as a condition; None when all were."""
    applied: list[ObjectRef] = field(default_factory=list)
    deleted: list[ObjectRef] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Copies the API server refused (not transient), as ``Secret NAME: message``."""


class PullSecretCopies:
    """Copies `sources` (Secret names in `operator_namespace`) into tenant namespaces."""

    def __init__(
        self, kube: KubeClient, *, sources: tuple[str, ...], operator_namespace: str
    ) -> None:
        self.kube = kube
        self.sources = sources
        self.operator_namespace = operator_namespace

    @property
    def names(self) -> tuple[str, ...]:
        """The copies' names, in the order of the sources."""
        return tuple(pull_secret_copy_name(source) for source in self.sources)

    def sync(self, namespace: str, *, tenant: str) -> PullSecretSync:
        """Converge the copies in tenant namespace `namespace` (checked to be `tenant`'s).

        Raises `KubeError` only when it is transient (a retry may cure it).
        """
        result = PullSecretSync(names=self.names)
        live = {
            str(s["metadata"]["name"]): s
            for s in self.kube.list(SECRET, namespace=namespace, label_selector=COPY_SELECTOR)
        }
        wanted: set[str] = set()
        if self.sources:
            owners = [
                backup_owner_reference(b)
                for b in self.kube.list(BACKUP, namespace=namespace)
                if not b["metadata"].get("deletionTimestamp")
            ]
            for source_name in self.sources:
                source = self.kube.get(SECRET, source_name, namespace=self.operator_namespace)
                problem = pull_source_problem(
                    source, name=source_name, namespace=self.operator_namespace
                )
                if problem is not None or source is None:
                    if result.problem is None and problem is not None:
                        result.problem = Observation("False", *problem)
                    continue
                copy = render_pull_secret_copy(
                    source=source,
                    source_namespace=self.operator_namespace,
                    namespace=namespace,
                    tenant=tenant,
                    owners=owners,
                )
                wanted.add(copy["metadata"]["name"])
                self._converge(copy, result)
        # Copies of sources no longer named, gone or unusable: the credential leaves too.
        for name, secret in sorted(live.items()):
            if name in wanted or not managed_by_operator(secret):
                continue
            if self.kube.delete(SECRET, name, namespace=namespace):
                # Items of a list carry no apiVersion and kind of their own.
                result.deleted.append(object_ref({"apiVersion": "v1", "kind": "Secret", **secret}))
        return result

    def _converge(self, copy: KubeObject, result: PullSecretSync) -> None:
        # Someone else's Secret at the copy's name (the admission policy refuses it; without
        # the policy a tenant admin could plant one), or one of another type (a Secret's
        # type cannot change), goes first, and the copy is made afresh.
        converge_child(
            self.kube,
            copy,
            applied=result.applied,
            deleted=result.deleted,
            failures=result.failures,
            ours=_our_copy,
        )


def _our_copy(live: KubeObject) -> bool:
    return managed_by_operator(live) and live.get("type") == PULL_SECRET_TYPE
