"""The backups a migration takes first (``spec.workload.migrations.backupFirst``).

Why: a migration that drops a column cannot be undone by rolling the image back; a backup
taken just before it can. So before the Job, the operator asks each scheduled CleoBackup
of the tenant for a one-off (``{tenant, from: <source>}``, the platform's kind of one-off:
`backup_source.PLATFORM_LABEL`, which tenant admins can neither set nor delete) and waits
for every one to succeed. The one-off runs exactly as one a tenant admin asks for: the
source's destination, retention and verification, checked by `backup_source.source_spec`
(a suspended, deleted or invalid source gives no one-off), in the source's line of
one-offs (the platform's go first), and removed by the backup reconciler after its time.

- No scheduled CleoBackup of the tenant that can be run: the migration does not run
  (``NoBackupSource``), since the spec asked for a backup first.
- A one-off that failed, or that disappeared (by uid): the migration does not run
  (``BackupFailed``).
- More sources than status can list (`MAX_SOURCES`): none is taken
  (``TooManyBackupSources``).
- A one-off is named from the attempt's nonce (`one_off_name`), never from the clock.
- Each one-off's name and the attempt's nonce are recorded on status before it is made
  (`take_one` finds one made but not recorded, by the platform's labels and an exact
  match of the nonce annotation, rather than taking a second; no clock is compared);
  something else at the name is never taken for it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import pydantic

from cleo_operator.api.backup import CleoBackupStatus, parse_backup_spec
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject
from cleo_operator.core.errors import CleoError
from cleo_operator.core.times import read_rfc3339
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.reconcile.backup_source import PLATFORM_LABEL, SourceError, source_spec
from cleo_operator.render.meta import API_VERSION, tenant_labels
from cleo_operator.render.migrations import NONCE_ANNOTATION

__all__ = [
    "MAX_SOURCES",
    "BackupsOutcome",
    "MigrationBackups",
    "NoSource",
    "PlantedOneOff",
    "TooManySources",
    "one_off_name",
]

COMPONENT = "migration"
MAX_SOURCES: Final = 16
"""The one-offs a migration's status can list (``attempt.backups``); more sources: none taken."""
_HEX6: Final = re.compile(r"[0-9a-f]{6}")
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class NoSource(CleoError, reason="NoBackupSource", retryable=False):
    """No scheduled CleoBackup of the tenant can give a one-off; the message says why."""


class TooManySources(NoSource, reason="TooManyBackupSources"):
    """More scheduled CleoBackups than a migration's status can list one-offs of."""


class PlantedOneOff(CleoError, reason="BackupFailed", retryable=False):
    """Something that is not the operator's one-off stands at its recorded name."""


@dataclass(frozen=True)
class BackupsOutcome:
    """Where the one-offs of a migration are."""

    state: Literal["succeeded", "failed", "pending"]
    message: str = ""
    created: datetime.datetime | None = None
    """The earliest ``creationTimestamp`` of the one-offs (the API server's clock), when
    they all have one: where their deadline runs from (`migration_state.backups_late`)."""


def one_off_name(key: str, index: int, *, nonce: str) -> str:
    """``cleo-migrate-<8 hex of the key>-<6 hex of the nonce>-<index>``: at most 31
    characters, a DNS label, new per attempt. From the attempt's nonce, never the time of
    day: a retry of the same key a whole number of days later (to the second) met the
    earlier attempt's one-off, still kept, at its name, and failed as planted. ValueError
    when `nonce` does not start with 6 hex digits (`migration_state.new_nonce` gives 32)
    or `index` is not below 100 (`MAX_SOURCES` is far less)."""
    if not _HEX6.fullmatch(nonce[:6]) or not 0 <= index < 100:
        raise ValueError("a one-off's name needs a hex nonce and an index below 100")
    name = f"cleo-migrate-{key[:8]}-{nonce[:6]}-{index}"
    if not _DNS_LABEL.fullmatch(name):
        raise ValueError(f"not a valid one-off name: {name!r}")
    return name


class MigrationBackups:
    """Creates and watches a migration's one-off backups (a few API requests a call)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def sources(self, namespace: str, tenant: str) -> list[str]:
        """The scheduled CleoBackups of `tenant` a one-off can run; `NoSource` if none."""
        usable: list[str] = []
        refused: list[str] = []
        for backup in self.kube.list(BACKUP, namespace=namespace):
            spec = backup.get("spec") or {}
            name = str(backup["metadata"]["name"])
            if not spec.get("schedule") or spec.get("from") or spec.get("tenant") != tenant:
                continue
            try:
                one_off = parse_backup_spec({"tenant": tenant, "from": name})
                source_spec(one_off, backup, namespace=namespace)
            except SourceError as exc:
                refused.append(f"{name}: {exc.reason}")
                continue
            except SpecError:
                refused.append(f"{name}: its name cannot be a spec.from")
                continue
            usable.append(name)
        if len(usable) > MAX_SOURCES:
            raise TooManySources(
                f"spec.workload.migrations.backupFirst is true but tenant {tenant} has "
                f"{len(usable)} scheduled CleoBackups in namespace {namespace}, more than the "
                f"{MAX_SOURCES} one-offs a migration takes; the migration does not run"
            )
        if usable:
            return sorted(usable)
        why = f" (none can run: {', '.join(sorted(refused))})" if refused else ""
        raise NoSource(
            f"spec.workload.migrations.backupFirst is true but tenant {tenant} has no "
            f"scheduled CleoBackup in namespace {namespace} to take a backup from{why}; "
            "the migration does not run. A platform admin creates one (docs/backups.md), "
            "or set backupFirst to false"
        )

    def take_one(
        self,
        *,
        namespace: str,
        tenant: str,
        name: str,
        source: str,
        nonce: str,
    ) -> str:
        """The one-off `name` of `source` as ``name/uid``: the one at that name when it is
        the operator's (the platform's labels, which tenants can neither set nor remove,
        and the attempt's `nonce`, recorded on status before it was made: no clock
        decides), else a new one. Raises KubeError (a refused create included), and
        `PlantedOneOff` when something else stands at the name."""
        labels = {**tenant_labels(tenant, component=COMPONENT), PLATFORM_LABEL: "platform"}
        existing = self.kube.get(BACKUP, name, namespace=namespace)
        if existing is not None:
            meta = existing["metadata"]
            have = meta.get("labels") or {}
            if (
                all(have.get(k) == v for k, v in labels.items())
                and (existing.get("spec") or {}).get("from") == source
                and (meta.get("annotations") or {}).get(NONCE_ANNOTATION) == nonce
            ):
                return f"{name}/{meta['uid']}"
            raise PlantedOneOff(
                f"CleoBackup {namespace}/{name} stands at the name of the migration's "
                "one-off but is not the operator's; the migration does not run"
            )
        body = {
            "apiVersion": API_VERSION,
            "kind": BACKUP.kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(sorted(labels.items())),
                "annotations": {NONCE_ANNOTATION: nonce},
            },
            "spec": {"tenant": tenant, "from": source},
        }
        created_obj = self.kube.create(body)
        return f"{created_obj['metadata']['name']}/{created_obj['metadata']['uid']}"

    def outcome(self, namespace: str, taken: Sequence[str]) -> BackupsOutcome:
        """Succeeded when every one-off made an archive; failed when one did not (or is
        gone); else pending, with what they wait for."""
        waiting: list[str] = []
        created: list[datetime.datetime | None] = []
        for item in taken:
            name, _, uid = item.partition("/")
            obj = self.kube.get(BACKUP, name, namespace=namespace)
            if obj is None or obj["metadata"].get("uid") != uid:
                return BackupsOutcome(
                    "failed",
                    f"the one-off backup CleoBackup {namespace}/{name} is gone before it "
                    "succeeded; the migration does not run",
                )
            created.append(read_rfc3339(obj["metadata"].get("creationTimestamp")))
            state, why = _one_off_state(obj)
            if state == "failed":
                return BackupsOutcome(
                    "failed",
                    f"the one-off backup CleoBackup {namespace}/{name} failed ({why}); the "
                    "migration does not run",
                )
            if state == "pending":
                waiting.append(f"{name} ({why})" if why else name)
        if waiting:
            known = [t for t in created if t is not None]
            return BackupsOutcome(
                "pending",
                f"waiting for the backup before the migration: {', '.join(waiting)}",
                created=min(known) if known and len(known) == len(created) else None,
            )
        return BackupsOutcome("succeeded")


def _one_off_state(obj: KubeObject) -> tuple[Literal["succeeded", "failed", "pending"], str]:
    try:
        status = CleoBackupStatus.model_validate(obj.get("status") or {})
    except pydantic.ValidationError:
        return "pending", ""
    last = status.last_backup
    if last is not None and last.succeeded is True:
        return "succeeded", ""
    run = status.history[0] if status.history else None
    if (last is not None and last.succeeded is False) or status.phase == "Failed":
        why = f"{run.reason}: {run.message}" if run and run.reason else "the run failed"
        return "failed", why[:300]
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    if status.phase == "Invalid":
        return "failed", f"{ready.reason}: {ready.message[:300]}" if ready else "invalid"
    return "pending", (ready.reason if ready is not None and ready.status == "False" else "")
