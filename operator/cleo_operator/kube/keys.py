"""Secret-backed key stores: the KEKs, the sealing keyring, and the two homes of a tenant keyring.

Keys are the one kind of object the operator must never lose or silently replace: a new
random key cannot open anything the old one encrypted. So the Secrets here are written by
rules that differ from every other child (which is server-side applied):

- **Created once, with POST.** Apply is "make it so", and two operator replicas (or a
  restarted one) would each make it so with their own random key, the last one winning. A
  POST create fails with 409 AlreadyExists instead; the loser then reads and uses the
  winner's key. Nothing here overwrites an existing key Secret it did not read first.
- **Changed only with a precondition.** Rotation adds a version with a JSON merge patch that
  carries `metadata.resourceVersion`: a writer whose view is stale gets 409 Conflict (and
  tries again from a fresh read) instead of dropping a version written in the meantime. A
  merge patch also only adds or replaces `data` entries, never removes them.
- **Never regenerated.** A key Secret that exists but cannot be read raises
  `InvalidKeyMaterial` naming the Secret; it is never replaced by a fresh one.

Which labels the Secrets carry, and in which order the two copies of a tenant keyring are
written, is decided one layer up (`reconcile.keys`); this module only knows Secrets.

**Fault points.** For crash tests, `CLEO_FAULT_POINT=<step>` makes the process SIGKILL
itself right after `<step>` (see `FaultPoint` for the names and `docs/encryption.md`). When
the variable is unset, `fault_point` does nothing.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

from cleo_operator.api.objects import KubeObject
from cleo_operator.crypto import (
    FileKEKProvider,
    InvalidKeyMaterial,
    KEKProvider,
    KeyEncryptionKeys,
    SealingKeyring,
    SealingPublicKey,
    kek_from_secret_data,
    kek_to_secret_data,
)
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.audit import audit
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import CONFIG_MAP, SECRET

__all__ = [
    "FAULT_POINTS",
    "FAULT_POINT_ENV",
    "KEK_DIR_ENV",
    "KEK_SECRET",
    "KEYRING_COPY_PREFIX",
    "PUBLIC_KEY_PEM_ENTRY",
    "PUBLIC_KEY_TEXT_ENTRY",
    "SEALING_PUBLIC_CONFIG_MAP",
    "SEALING_SECRET",
    "TENANT_KEYRING_SECRET",
    "WRAPPED_KEYRING_ENTRY",
    "FaultPoint",
    "KeyringCopy",
    "SealingKeyStore",
    "SecretKEKProvider",
    "StoredSecret",
    "check_fault_point_env",
    "create_keyring_copy",
    "create_secret",
    "fault_point",
    "kek_dir_from_environment",
    "kek_provider",
    "keyring_copy_name",
    "list_keyring_copies",
    "list_secrets",
    "read_keyring_copy",
    "read_secret",
    "replace_secret_data",
    "update_keyring_copy",
    "update_secret",
]

log = logging.getLogger(__name__)


def _secret_ref(namespace: str, name: str) -> dict[str, Any]:
    """A key Secret as the audit trail's object (its Event is posted on it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
    }


FAULT_POINT_ENV: Final = "CLEO_FAULT_POINT"
"""Environment variable naming the step after which the process SIGKILLs itself (tests)."""
KEK_DIR_ENV: Final = "CLEO_KEK_DIR"
"""Environment variable selecting the file KEK provider: a directory of `v<N>` key files."""

KEK_SECRET: Final = "cleo-kek"  # noqa: S105 - an object name
"""The KEK Secret in the operator namespace (the default KEK provider)."""
SEALING_SECRET: Final = "cleo-sealing-keys"  # noqa: S105 - an object name
"""The sealing keyring (X25519 private keys) in the operator namespace."""
SEALING_PUBLIC_CONFIG_MAP: Final = "cleo-sealing-public-key"
"""The current sealing public key, published for `cleo-operator seal` (no secret in it)."""
PUBLIC_KEY_TEXT_ENTRY: Final = "public-key.txt"
PUBLIC_KEY_PEM_ENTRY: Final = "public-key.pem"
TENANT_KEYRING_SECRET: Final = "cleo-keyring"  # noqa: S105 - an object name
"""The tenant keyring in the tenant's namespace (what CleoAI mounts)."""
KEYRING_COPY_PREFIX: Final = "cleo-keyring-"
"""KEK-wrapped copies in the operator namespace are named `cleo-keyring-<tenant>`."""
WRAPPED_KEYRING_ENTRY: Final = "keyring.wrapped"
"""Secret data entry of a copy: the `wrap_keyring` envelope text."""

FaultPoint = Literal[
    "kek-generated",
    "kek-created",
    "kek-rotated",
    "sealing-keys-generated",
    "sealing-keys-created",
    "sealing-keys-rotated",
    "keyring-generated",
    "keyring-copy-created",
    "keyring-copy-adopted",
    "keyring-copy-rewrapped",
    "keyring-tenant-created",
    "keyring-tenant-quarantined",
    "keyring-tenant-updated",
    "keyring-rotation-copy-written",
    "keyring-rotation-tenant-written",
]
"""The steps `CLEO_FAULT_POINT` can name; each is documented in docs/encryption.md."""
FAULT_POINTS: Final[tuple[FaultPoint, ...]] = get_args(FaultPoint)


def check_fault_point_env(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse an unknown `CLEO_FAULT_POINT`: a typo would silently test nothing."""
    value = environ.get(FAULT_POINT_ENV)
    if value and value not in FAULT_POINTS:
        raise ValueError(
            f"{FAULT_POINT_ENV}={value!r} is not a fault point; use one of "
            f"{', '.join(FAULT_POINTS)} (or unset it)"
        )


def fault_point(step: FaultPoint) -> None:
    """SIGKILL this process right after `step` when `CLEO_FAULT_POINT` names it; else nothing.

    SIGKILL, not an exception: a crash test must see what a power cut leaves behind, with
    no `finally`, no atexit and no cleanup by Kopf.
    """
    if os.environ.get(FAULT_POINT_ENV) != step:
        return
    log.warning("fault point %s reached (%s): killing this process", step, FAULT_POINT_ENV)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# -- Secrets, typed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSecret:
    """A Secret as read from the API server, with its data decoded."""

    namespace: str
    """Where it lives."""
    name: str
    resource_version: str
    """The version this read saw; updates are preconditioned on it."""
    data: Mapping[str, bytes] = field(repr=False)
    """Decoded `data`; never in reprs."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: KubeObject) -> StoredSecret:
        """Decode a Secret object as returned by the API server."""
        meta = obj["metadata"]
        raw: Mapping[str, str] = obj.get("data") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta["name"]),
            resource_version=str(meta.get("resourceVersion", "")),
            data={key: base64.b64decode(value) for key, value in raw.items()},
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def where(self) -> str:
        """`namespace/name`, for messages."""
        return f"{self.namespace}/{self.name}"


def _encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode("ascii") for key, value in sorted(data.items())}


def read_secret(kube: KubeClient, *, namespace: str, name: str) -> StoredSecret | None:
    """The Secret, or None when it (or its namespace) does not exist."""
    obj = kube.get(SECRET, name, namespace=namespace)
    return None if obj is None else StoredSecret.from_object(obj)


def create_secret(
    kube: KubeClient,
    *,
    namespace: str,
    name: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> StoredSecret | None:
    """POST a new Opaque Secret; None when it already exists (someone else created it first).

    Other API errors (a missing or terminating namespace, RBAC) raise `KubeError`.
    """
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": _encode(data),
    }
    try:
        created = kube.create(body)
    except KubeError as exc:
        if exc.conflict:
            return None
        raise
    return StoredSecret.from_object(created)


def update_secret(
    kube: KubeClient, current: StoredSecret, data: Mapping[str, bytes]
) -> StoredSecret:
    """Set `data` entries of a Secret read as `current`, only if nobody wrote it since.

    A merge patch with `metadata.resourceVersion` as precondition: 409 Conflict (`KubeError`
    with `.conflict`) when the Secret changed after `current` was read. Entries not in
    `data` are kept.
    """
    patch = {"metadata": {"resourceVersion": current.resource_version}, "data": _encode(data)}
    updated = kube.patch_merge(SECRET, current.name, patch, namespace=current.namespace)
    return StoredSecret.from_object(updated)


def replace_secret_data(
    kube: KubeClient,
    current: StoredSecret,
    data: Mapping[str, bytes],
    *,
    labels: Mapping[str, str],
) -> StoredSecret:
    """Make a Secret read as `current` hold exactly `data` (and carry `labels`), only if
    nobody wrote it since.

    Unlike `update_secret`, entries that are not in `data` are removed: this repairs a
    Secret someone else wrote. A merge patch preconditioned on `metadata.resourceVersion`
    (409 Conflict, `KubeError.conflict`, when it changed after `current` was read).
    """
    encoded: dict[str, str | None] = dict(_encode(data))
    encoded.update({key: None for key in current.data if key not in data})
    patch = {
        "metadata": {"resourceVersion": current.resource_version, "labels": dict(labels)},
        "data": encoded,
    }
    updated = kube.patch_merge(SECRET, current.name, patch, namespace=current.namespace)
    return StoredSecret.from_object(updated)


def list_secrets(kube: KubeClient, *, namespace: str, label_selector: str) -> list[StoredSecret]:
    """The Secrets of `namespace` that match `label_selector`, sorted by name."""
    items = kube.list(SECRET, namespace=namespace, label_selector=label_selector)
    return sorted((StoredSecret.from_object(item) for item in items), key=lambda s: s.name)


# -- KEKs -------------------------------------------------------------------------------------


def kek_dir_from_environment(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The KEK directory named by `CLEO_KEK_DIR`, or None for the default Secret provider."""
    value = environ.get(KEK_DIR_ENV, "").strip()
    return Path(value) if value else None


@dataclass(frozen=True)
class SecretKEKProvider:
    """KEKs in a Secret of the operator namespace (data entries `v1`, `v2`, ... of 32 bytes).

    The default provider. `ensure` creates the Secret once; `load` never does.
    """

    kube: KubeClient = field(repr=False)
    """The client used to read and write the Secret."""
    namespace: str
    """The operator namespace."""
    name: str = KEK_SECRET
    """The Secret's name."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of the Secret when this provider creates it."""

    @property
    def where(self) -> str:
        """`namespace/name`, for messages."""
        return f"{self.namespace}/{self.name}"

    def _parse(self, stored: StoredSecret) -> KeyEncryptionKeys:
        try:
            return kek_from_secret_data(stored.data)
        except InvalidKeyMaterial as exc:
            raise InvalidKeyMaterial(f"KEK Secret {self.where}: {exc.message}") from None

    def _missing(self) -> InvalidKeyMaterial:
        return InvalidKeyMaterial(
            f"the KEK Secret {self.where} does not exist: the operator creates it on its first "
            "start (or run `cleo-operator keys init`); if it was deleted, restore it from a "
            "backup, since keyring copies wrapped by it cannot be opened with a new one"
        )

    def load(self) -> KeyEncryptionKeys:
        """Read the KEKs; InvalidKeyMaterial when the Secret is missing or unusable."""
        stored = read_secret(self.kube, namespace=self.namespace, name=self.name)
        if stored is None:
            raise self._missing()
        return self._parse(stored)

    def ensure(self) -> KeyEncryptionKeys:
        """Read the KEKs, creating the Secret with one fresh KEK only if it does not exist."""
        stored = read_secret(self.kube, namespace=self.namespace, name=self.name)
        if stored is not None:
            return self._parse(stored)
        keks = KeyEncryptionKeys.generate()
        fault_point("kek-generated")
        created = create_secret(
            self.kube,
            namespace=self.namespace,
            name=self.name,
            data=kek_to_secret_data(keks),
            labels=self.labels,
        )
        if created is None:
            # Another process created it between our read and our create: use theirs.
            log.info("KEK Secret %s was created concurrently; using it", self.where)
            return self.load()
        fault_point("kek-created")
        audit(
            self.kube,
            _secret_ref(self.namespace, self.name),
            action="KEKCreated",
            message=f"created KEK Secret {self.where} with KEK v{keks.current_version}",
        )
        return keks

    def rotate(self) -> KeyEncryptionKeys:
        """Add a fresh current KEK version (old ones kept); 409 Conflict on a concurrent change."""
        stored = read_secret(self.kube, namespace=self.namespace, name=self.name)
        if stored is None:
            raise self._missing()
        keks = self._parse(stored).rotate()
        update_secret(self.kube, stored, kek_to_secret_data(keks))
        fault_point("kek-rotated")
        audit(
            self.kube,
            _secret_ref(self.namespace, self.name),
            action="KEKRotated",
            message=f"added KEK v{keks.current_version} to {self.where}",
        )
        return keks


def kek_provider(
    kube: KubeClient, *, namespace: str, kek_dir: Path | None, labels: Mapping[str, str]
) -> KEKProvider:
    """The file provider when `kek_dir` is set (`CLEO_KEK_DIR`), else the KEK Secret."""
    if kek_dir is not None:
        return FileKEKProvider(kek_dir)
    return SecretKEKProvider(kube, namespace, labels=labels)


# -- sealing keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SealingKeyStore:
    """The sealing keyring Secret, and the ConfigMap that publishes its current public key.

    The public key is published in a ConfigMap so that people who seal values need read
    access to that ConfigMap only, never to the Secret holding the private keys.
    """

    kube: KubeClient = field(repr=False)
    """The client used to read and write the Secret and the ConfigMap."""
    namespace: str
    """The operator namespace."""
    name: str = SEALING_SECRET
    """The Secret's name."""
    public_name: str = SEALING_PUBLIC_CONFIG_MAP
    """The ConfigMap's name."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of the Secret and ConfigMap when this store writes them."""

    @property
    def where(self) -> str:
        """`namespace/name` of the Secret, for messages."""
        return f"{self.namespace}/{self.name}"

    def _parse(self, stored: StoredSecret) -> SealingKeyring:
        try:
            return SealingKeyring.from_secret_data(stored.data)
        except InvalidKeyMaterial as exc:
            raise InvalidKeyMaterial(f"sealing key Secret {self.where}: {exc.message}") from None

    def _missing(self) -> InvalidKeyMaterial:
        return InvalidKeyMaterial(
            f"the sealing key Secret {self.where} does not exist: the operator creates it on "
            "its first start (or run `cleo-operator keys init`); if it was deleted, restore it "
            "from a backup, since values sealed to its keys cannot be opened with new ones"
        )

    def load(self) -> SealingKeyring:
        """Read the sealing keyring; InvalidKeyMaterial when missing or unusable."""
        stored = read_secret(self.kube, namespace=self.namespace, name=self.name)
        if stored is None:
            raise self._missing()
        return self._parse(stored)

    def ensure(self, *, now: datetime) -> SealingKeyring:
        """Read the keyring, creating it once when absent; (re)publish the public key."""
        stored = read_secret(self.kube, namespace=self.namespace, name=self.name)
        if stored is not None:
            keyring = self._parse(stored)
        else:
            keyring = SealingKeyring.generate(now)
            fault_point("sealing-keys-generated")
            created = create_secret(
                self.kube,
                namespace=self.namespace,
                name=self.name,
                data=keyring.to_secret_data(),
                labels=self.labels,
            )
            if created is None:
                log.info("sealing key Secret %s was created concurrently; using it", self.where)
                keyring = self.load()
            else:
                fault_point("sealing-keys-created")
                audit(
                    self.kube,
                    _secret_ref(self.namespace, self.name),
                    action="SealingKeyCreated",
                    message=f"created sealing key Secret {self.where} with key "
                    f"{keyring.current.key_id}",
                )
        self.publish(keyring)
        return keyring

    def rotate(self, *, now: datetime) -> SealingKeyring:
        """Add a fresh current sealing key (old ones kept for unsealing) and publish it."""
        stored = read_secret(self.kube, namespace=self.namespace, name=self.name)
        if stored is None:
            raise self._missing()
        keyring = self._parse(stored).rotate(now)
        update_secret(self.kube, stored, keyring.to_secret_data())
        fault_point("sealing-keys-rotated")
        audit(
            self.kube,
            _secret_ref(self.namespace, self.name),
            action="SealingKeyRotated",
            message=f"sealing key v{keyring.current_version} ({keyring.current.key_id}) is now "
            f"current in {self.where}",
        )
        self.publish(keyring)
        return keyring

    def publish(self, keyring: SealingKeyring) -> bool:
        """Write the current public key to the ConfigMap when it differs; True if written."""
        public = keyring.public_key
        desired = with_hash(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.public_name,
                    "namespace": self.namespace,
                    "labels": dict(self.labels),
                },
                "data": {
                    PUBLIC_KEY_TEXT_ENTRY: public.to_text() + "\n",
                    PUBLIC_KEY_PEM_ENTRY: public.to_pem(),
                },
            }
        )
        live = self.kube.get(CONFIG_MAP, self.public_name, namespace=self.namespace)
        if not needs_apply(desired, live):
            return False
        self.kube.apply(desired)
        log.info(
            "published sealing public key %s in ConfigMap %s/%s",
            public.key_id,
            self.namespace,
            self.public_name,
        )
        return True

    def published_public_key(self) -> SealingPublicKey | None:
        """The public key in the ConfigMap, or None when it is not published (yet)."""
        live = self.kube.get(CONFIG_MAP, self.public_name, namespace=self.namespace)
        if live is None:
            return None
        text = (live.get("data") or {}).get(PUBLIC_KEY_TEXT_ENTRY)
        if not isinstance(text, str):
            raise InvalidKeyMaterial(
                f"ConfigMap {self.namespace}/{self.public_name} has no "
                f"data[{PUBLIC_KEY_TEXT_ENTRY!r}]: delete it and the operator publishes it "
                "again on its next start"
            )
        try:
            return SealingPublicKey.from_text(text)
        except ValueError as exc:
            raise InvalidKeyMaterial(
                f"ConfigMap {self.namespace}/{self.public_name}: {exc}; delete it and the "
                "operator publishes it again on its next start"
            ) from None


# -- the KEK-wrapped copies of tenant keyrings ------------------------------------------------


def keyring_copy_name(tenant: str) -> str:
    """Name of the KEK-wrapped copy of `tenant`'s keyring in the operator namespace."""
    return KEYRING_COPY_PREFIX + tenant


@dataclass(frozen=True)
class KeyringCopy:
    """The KEK-wrapped copy of one tenant's keyring, as stored."""

    tenant: str
    """The tenant it belongs to (from the Secret's name; the wrap context checks it)."""
    secret: StoredSecret
    """The Secret holding it."""

    @property
    def wrapped(self) -> str:
        """The `wrap_keyring` envelope text."""
        return self.secret.data[WRAPPED_KEYRING_ENTRY].decode("ascii")

    @classmethod
    def from_secret(cls, secret: StoredSecret) -> KeyringCopy:
        """Check the layout of a copy Secret; InvalidKeyMaterial names what is wrong."""
        raw = secret.data.get(WRAPPED_KEYRING_ENTRY)
        if raw is None or not raw.isascii():
            raise InvalidKeyMaterial(
                f"the keyring copy Secret {secret.where} has no ASCII "
                f"data[{WRAPPED_KEYRING_ENTRY!r}]: it was edited; restore it from a backup"
            )
        if not secret.name.startswith(KEYRING_COPY_PREFIX):
            raise InvalidKeyMaterial(
                f"{secret.where} is not named {KEYRING_COPY_PREFIX}<tenant>: not a keyring copy"
            )
        return cls(tenant=secret.name[len(KEYRING_COPY_PREFIX) :], secret=secret)


def read_keyring_copy(
    kube: KubeClient, *, operator_namespace: str, tenant: str
) -> KeyringCopy | None:
    """The copy of `tenant`'s keyring, or None when there is none."""
    stored = read_secret(kube, namespace=operator_namespace, name=keyring_copy_name(tenant))
    return None if stored is None else KeyringCopy.from_secret(stored)


def create_keyring_copy(
    kube: KubeClient,
    *,
    operator_namespace: str,
    tenant: str,
    wrapped: str,
    labels: Mapping[str, str],
) -> KeyringCopy | None:
    """POST the copy; None when one already exists (never overwritten)."""
    created = create_secret(
        kube,
        namespace=operator_namespace,
        name=keyring_copy_name(tenant),
        data={WRAPPED_KEYRING_ENTRY: wrapped.encode("ascii")},
        labels=labels,
    )
    return None if created is None else KeyringCopy.from_secret(created)


def update_keyring_copy(kube: KubeClient, copy: KeyringCopy, wrapped: str) -> KeyringCopy:
    """Replace the wrapped keyring, preconditioned on the copy's resourceVersion (409 if stale)."""
    updated = update_secret(kube, copy.secret, {WRAPPED_KEYRING_ENTRY: wrapped.encode("ascii")})
    return KeyringCopy.from_secret(updated)


def list_keyring_copies(
    kube: KubeClient, *, operator_namespace: str, label_selector: str
) -> list[KeyringCopy]:
    """Every keyring copy in the operator namespace that matches `label_selector`."""
    items = kube.list(SECRET, namespace=operator_namespace, label_selector=label_selector)
    secrets = [StoredSecret.from_object(item) for item in items]
    return [
        KeyringCopy.from_secret(secret)
        for secret in sorted(secrets, key=lambda s: s.name)
        if secret.name.startswith(KEYRING_COPY_PREFIX)
    ]
