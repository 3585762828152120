"""Keeping the runner's registry credentials copied into a tenant namespace, level-based.

Each backup reconcile of a tenant namespace calls `PullSecretCopies.sync`, which reads the
sources (the Secrets ``CLEO_BACKUP_IMAGE_PULL_SECRETS`` names, in the operator's namespace)
and the copies fresh and converges: a copy per usable source (`render.pull_secrets`: why
copies, why those names, why one type only, why the tenant owns them), updated when its
source changed, deleted when its source is no longer named, no longer exists or is not
registry credentials, and nothing written when all is as it should be. The sources are not
watched (the operator watches no Secret), so a changed source reaches the copies on the
next reconcile of a backup in that namespace, at the latest after the resync period.

Pruning runs whatever the state of the backup's tenant: when the tenant is gone, invalid,
or the namespace is not its own, the sync is called without an owner and deletes the
tenant's copies there (and makes none), so a credential never stays behind with former
admins. A no-op sync costs one list of the copies (by label) and one read per source; it
lists no CleoBackups, however many the namespace holds.

A source that cannot be copied is the ``PullSecretsCopied`` condition of the CleoBackup
(reasons ``ImagePullSecretMissing`` and ``ImagePullSecretInvalid``), never an exception,
and never what blocks the runner: the runner pods always name the copies of every
configured source, so that the CronJob does not change with the sources' state, and the
kubelet pulls without a pull secret that does not exist (with the nodes' credentials, if
any). A Secret that is not the operator's at the name of a copy that could not be made is
deleted, so that the pods never pull with a Secret someone planted there (the admission
policy refuses it; this holds without the policy too).

`check_sources` is the operator's start-up check: a configured source that does not exist
in its namespace stops the start with its name (the setting's meaning changed: it used to
name Secrets of the tenant namespaces).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cleo_operator.api.objects import KubeObject, ObjectRef, object_ref
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import SECRET
from cleo_operator.reconcile.children import converge_child
from cleo_operator.reconcile.status import Observation, clip
from cleo_operator.render.meta import TENANT_LABEL, labels_of, managed_by_operator
from cleo_operator.render.pull_secrets import (
    COPY_SELECTOR,
    PULL_SECRET_TYPE,
    copy_owner,
    pull_secret_copy_name,
    pull_source_problem,
    render_pull_secret_copy,
)

__all__ = ["CONDITION", "PullSecretCopies", "PullSecretSync", "check_sources"]

log = logging.getLogger(__name__)

CONDITION = "PullSecretsCopied"
"""The CleoBackup condition that says whether the runner's registry Secrets were copied."""


@dataclass
class PullSecretSync:
    """What one sync did, and what the runner pods name."""

    names: tuple[str, ...]
    """The copies the runner pods name (those of every configured source)."""
    condition: Observation
    """``PullSecretsCopied``: True when every source was copied (or none is configured)."""
    applied: list[ObjectRef] = field(default_factory=list)
    deleted: list[ObjectRef] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Copies the API server refused (not transient), as ``Secret NAME: message``."""

    @property
    def problem(self) -> Observation | None:
        """The condition when a source could not be copied; None otherwise."""
        return self.condition if self.condition.status == "False" else None


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

    def kept_while_invalid(self) -> PullSecretSync:
        """What a backup of a tenant whose spec does not parse does with the copies: nothing.

        An invalid spec says nothing of who the tenant is, and the runner made before still
        pulls with the copies it names: they stay, neither refreshed nor pruned, until the
        spec is fixed or the tenant is gone (a stored spec that an upgrade reads more
        strictly must not cost the tenant's backups their credentials). Only `sync`
        without an owner deletes.
        """
        return PullSecretSync(
            names=self.names,
            condition=Observation(
                "Unknown",
                "TenantInvalid",
                "the tenant's spec is invalid (see its Ready condition): the registry Secret "
                "copies are kept as they are until it is fixed",
            ),
        )

    def sync(self, namespace: str, *, tenant: str, owner: KubeObject | None) -> PullSecretSync:
        """Converge the copies of `tenant` in namespace `namespace`.

        `owner` is the CleoTenant as just read, when the namespace is checked to be its own;
        None (the tenant is gone, or the namespace is not its own) deletes the
        tenant's copies there and makes none. Raises `KubeError` only when it is transient.
        """
        result = PullSecretSync(names=self.names, condition=_copied(self.names))
        if owner is None:
            result.condition = Observation(
                "Unknown",
                "TenantNotReady",
                "registry Secrets are copied only into the namespace of a tenant that is "
                "ready for backups (see the Ready condition)",
            )
        try:
            listed = self.kube.list(SECRET, namespace=namespace, label_selector=COPY_SELECTOR)
        except KubeError as exc:
            if owner is not None or exc.transient:
                raise
            # No right to Secrets here (a namespace that was never a tenant's, or is no
            # longer bound to the operator): the operator made no copy here to prune.
            log.debug("no registry copies to prune in %s: %s", namespace, exc.reason)
            return result
        live = {str(s["metadata"]["name"]): s for s in listed}
        wanted: set[str] = set()
        if owner is not None:
            uid = str(owner["metadata"]["uid"])
            for source_name in self.sources:
                source = self.kube.get(SECRET, source_name, namespace=self.operator_namespace)
                problem = pull_source_problem(
                    source, name=source_name, namespace=self.operator_namespace
                )
                if problem is not None or source is None:
                    if problem is not None and result.problem is None:
                        result.condition = Observation("False", problem[0], clip(problem[1]))
                    reserved = pull_secret_copy_name(source_name)
                    self._clear_reserved(namespace, reserved, live, result)
                    continue
                copy = render_pull_secret_copy(
                    source=source,
                    source_namespace=self.operator_namespace,
                    namespace=namespace,
                    tenant=tenant,
                    owner=copy_owner(tenant=tenant, uid=uid),
                )
                wanted.add(copy["metadata"]["name"])
                self._converge(copy, result)
        # Copies of sources no longer named, gone or unusable: the credential leaves too.
        # Without an owner only this tenant's: a namespace that is another tenant's keeps
        # the copies its own backups need.
        for name, secret in sorted(live.items()):
            if name in wanted or not managed_by_operator(secret):
                continue
            if owner is None and labels_of(secret).get(TENANT_LABEL) != tenant:
                continue
            if self.kube.delete(SECRET, name, namespace=namespace):
                # Items of a list carry no apiVersion and kind of their own.
                result.deleted.append(object_ref({"apiVersion": "v1", "kind": "Secret", **secret}))
        return result

    def _clear_reserved(
        self, namespace: str, name: str, live: dict[str, KubeObject], result: PullSecretSync
    ) -> None:
        """Delete a Secret that is not a copy at the name of a copy that could not be made:
        the runner pods name it, and would pull with what someone planted there."""
        if name in live:
            return  # a copy (by its labels): pruned with the other copies
        planted = self.kube.get(SECRET, name, namespace=namespace)
        if planted is None:
            return
        log.warning(
            "Secret %s/%s is at the name of a registry copy and is not one: deleting it",
            namespace,
            name,
        )
        if self.kube.delete(SECRET, name, namespace=namespace):
            result.deleted.append(object_ref(planted))

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


def _copied(names: Sequence[str]) -> Observation:
    if not names:
        return Observation(
            "True",
            "NoneConfigured",
            "no registry Secret is configured (backup.imagePullSecrets): the runner pods "
            "pull their image with the nodes' own credentials, if any",
        )
    return Observation(
        "True",
        "Copied",
        clip("the runner pods pull their image with " + ", ".join(names)),
    )


def _our_copy(live: KubeObject) -> bool:
    return managed_by_operator(live) and live.get("type") == PULL_SECRET_TYPE


def check_sources(kube: KubeClient, sources: Sequence[str], *, operator_namespace: str) -> None:
    """Refuse to start while a configured source is missing from `operator_namespace`.

    ValueError names the setting, the missing Secrets and what to do. Until issue 13 the
    setting named Secrets of the tenant namespaces; an install upgraded with those values
    would otherwise point every runner at copies that can never exist.
    """
    missing: list[str] = []
    for name in sources:
        try:
            found = kube.get(SECRET, name, namespace=operator_namespace)
        except KubeError as exc:
            if exc.transient:
                raise
            raise ValueError(
                f"CLEO_BACKUP_IMAGE_PULL_SECRETS (backup.imagePullSecrets): cannot read Secret "
                f"{operator_namespace}/{name}: {exc.status} {exc.reason}; the operator must "
                "be allowed to get it (the chart's Role grants it)"
            ) from None
        if found is None:
            missing.append(name)
    if missing:
        raise ValueError(
            "CLEO_BACKUP_IMAGE_PULL_SECRETS (backup.imagePullSecrets) names "
            f"{', '.join(missing)}, which do not exist in the operator's namespace "
            f"{operator_namespace}. The setting names registry Secrets of the operator's "
            "namespace, copied into tenant namespaces (it no longer names Secrets of the "
            f"tenant namespaces): create them (kubectl -n {operator_namespace} create secret "
            "docker-registry NAME ...) or remove them from the setting"
        )
