"""The operator's own keys: the KEK provider and the sealing keys, found and made once.

Why apart from the tenant keyrings: these are read by every part that handles key material
(keyrings, sealed secrets) and by the command line, and they change for other reasons (a
KMS directory instead of a Secret, a new sealing key) than a tenant's keyring does.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cleo_operator.crypto import KEKProvider
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import (
    SealingKeyStore,
    SecretKEKProvider,
    check_fault_point_env,
    kek_provider,
)
from cleo_operator.render.child import COMPONENT_LABEL
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger(__name__)

KEYS_COMPONENT: Final = "keys"
"""`app.kubernetes.io/component` of the operator's own key Secrets and public key ConfigMap."""


def operator_key_labels() -> dict[str, str]:
    """Labels of the operator's own key Secrets and the public key ConfigMap."""
    return {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: KEYS_COMPONENT}


@dataclass(frozen=True)
class OperatorKeys:
    """Where this operator's keys are: the KEK provider and the sealing key store."""

    operator_namespace: str
    """The namespace of the operator's Secrets (KEK, sealing keys, keyring copies)."""
    kek: KEKProvider
    """The KEK Secret (default) or a KEK directory (`CLEO_KEK_DIR`)."""
    sealing: SealingKeyStore
    """The sealing keyring Secret and its published public key."""

    @classmethod
    def locate(
        cls, kube: KubeClient, *, operator_namespace: str, kek_dir: Path | None
    ) -> OperatorKeys:
        """Where the keys are, without reading or writing anything."""
        labels = operator_key_labels()
        return cls(
            operator_namespace=operator_namespace,
            kek=kek_provider(kube, namespace=operator_namespace, kek_dir=kek_dir, labels=labels),
            sealing=SealingKeyStore(kube, operator_namespace, labels=labels),
        )


def ensure_operator_keys(
    kube: KubeClient,
    *,
    operator_namespace: str,
    kek_dir: Path | None,
    now: datetime.datetime,
) -> OperatorKeys:
    """At operator start: create the KEK Secret and sealing keys once, publish the public key.

    Existing keys are read and kept, never replaced. With a KEK directory, the directory is
    checked to hold usable KEKs. Raises `InvalidKeyMaterial` (a key Secret or the KEK
    directory is unusable) or `KubeError` (for example, a missing operator namespace).
    """
    check_fault_point_env()
    keys = OperatorKeys.locate(kube, operator_namespace=operator_namespace, kek_dir=kek_dir)
    # The KEK Secret is created once here; a KEK directory is only checked (the KMS owns it).
    keks = keys.kek.ensure() if isinstance(keys.kek, SecretKEKProvider) else keys.kek.load()
    sealing = keys.sealing.ensure(now=now)
    log.info(
        "operator keys ready in %s: KEK v%d (%s), sealing key %s",
        operator_namespace,
        keks.current_version,
        "Secret" if isinstance(keys.kek, SecretKEKProvider) else f"directory {kek_dir}",
        sealing.current.key_id,
    )
    return keys


class UsesOperatorKeys:
    """A reconciler of key material: one client and the operator's keys, shared by the
    worker threads."""

    def __init__(self, kube: KubeClient, keys: OperatorKeys) -> None:
        self.kube = kube
        self.keys = keys
