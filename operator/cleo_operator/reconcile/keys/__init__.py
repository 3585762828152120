"""Keys on the cluster: the operator's own, each tenant's keyring, and what is quarantined.

One module per reason to change:

- `operator_keys`: where the KEK and the sealing keys are, made once at operator start;
- `keyring`: each tenant's keyring, made once, kept in two homes, repaired and rotated (the
  order of writes that never leads to a second random keyring is written there);
- `quarantine`: what a tenant Secret held that the copy does not, kept for people;
- `maintenance`: what people run (adopt a quarantined keyring, rotate the KEK, re-wrap).

The names below are the package's interface; callers import them from here.
"""

from cleo_operator.reconcile.keys.keyring import (
    KEYRING_COMPONENT,
    KEYRING_COPY_SELECTOR,
    KEYRING_READY,
    STATUS_KEYS,
    TENANT_KEYRING_REPAIRED,
    UNTRUSTED_KEYRING_REPLACED,
    ConditionUpdate,
    KeyringDifferences,
    KeyringOutcome,
    KeyringReconciler,
    KeyringStatus,
    keyring_differences,
    keyring_labels,
    recorded_key_version,
)
from cleo_operator.reconcile.keys.maintenance import (
    RewrapReport,
    adopt_quarantined,
    rewrap_keyring_copies,
    rotate_kek,
)
from cleo_operator.reconcile.keys.operator_keys import (
    KEYS_COMPONENT,
    OperatorKeys,
    UsesOperatorKeys,
    ensure_operator_keys,
    operator_key_labels,
)
from cleo_operator.reconcile.keys.quarantine import (
    QUARANTINE_COMPONENT,
    QUARANTINE_PREFIX,
    quarantine_name,
    quarantine_selector,
)

__all__ = [
    "KEYRING_COMPONENT",
    "KEYRING_COPY_SELECTOR",
    "KEYRING_READY",
    "KEYS_COMPONENT",
    "QUARANTINE_COMPONENT",
    "QUARANTINE_PREFIX",
    "STATUS_KEYS",
    "TENANT_KEYRING_REPAIRED",
    "UNTRUSTED_KEYRING_REPLACED",
    "ConditionUpdate",
    "KeyringDifferences",
    "KeyringOutcome",
    "KeyringReconciler",
    "KeyringStatus",
    "OperatorKeys",
    "RewrapReport",
    "UsesOperatorKeys",
    "adopt_quarantined",
    "ensure_operator_keys",
    "keyring_differences",
    "keyring_labels",
    "operator_key_labels",
    "quarantine_name",
    "quarantine_selector",
    "recorded_key_version",
    "rewrap_keyring_copies",
    "rotate_kek",
]
