"""Retention: which backups to keep (grandfather-father-son), and pruning the rest.

The rules, each optional; a backup is kept when *any* rule keeps it:

- `keep_last = N`: the N newest backups;
- `keep_hourly = N`: the newest backup of each of the last N hours;
- `keep_daily`, `keep_weekly` (ISO weeks, Monday to Sunday), `keep_monthly`: likewise.

"The last N hours" are calendar periods counted back from `now`: the hour that contains
`now` is the first, the hour before it the second, and so on, whether or not a backup was
made in them. So the rules are also age limits: after a month without backups, a
`keepDaily: 7` keeps nothing of its own (which is why two more rules protect what matters):

- the newest backup, and the newest *verified* backup, are never pruned, whatever the
  counts (even all zero): retention never leaves a tenant without its latest backup or
  without the latest proof that its backups restore;
- a backup dated after `now` (clock skew between nodes) is kept, and left out of every
  rule: it cannot be placed, and the rules count back from `now`.

One-offs (archives a tenant admin asked for with ``spec.from``; the manifest's authenticated
``madeBy`` says so) are outside the rules: the rules, and the two protections above, count
and keep only the other archives, so that no number of one-offs can push a scheduled archive
out of a rule (a tenant admin, or whoever stole its credentials, asking for one-off after
one-off would otherwise erase the history). One-offs have their own bound instead:
`keep_one_offs`, the newest N of them (default `DEFAULT_KEEP_ONE_OFFS`); and a one-off's run
never prunes (`cleo_operator.cli.backup.run_backup_for`): pruning happens in the scheduled
runs.

With no rule set at all, everything is kept (the API's default: backups are never
destroyed unless the owner says how many to keep). Hours are UTC hours; days, weeks and
months are those of `tz` (default UTC), like the schedule's time zone.

`select_to_keep` is pure, so it is tested over simulated months. `prune` applies it to a
storage: per deleted backup, the manifest first (the backup ceases to exist atomically),
then the archive, then its verification record; a crash in between leaves objects that are
not a backup and that the next prune removes once they are older than a grace period. The
grace period also spares an archive whose backup is writing its manifest right now.

What retention trusts: whoever may write the storage may write manifests and verification
records, so `prune` needs the tenant keyring and acts on authentic backups only
(`cleo_operator.backup.catalog.list_backups`): a forged manifest can neither push a real
backup out of a rule (it is never counted as one of the backups to keep) nor be deleted in
its place, and a forged or old (unsealed) verification record makes nothing "verified".
Backups whose manifest claims the tenant but does not authenticate are never deleted by
retention: they are reported (`PruneResult.unauthenticated` and `problems`) for a person to
look at, because one of them may be a real backup made with a key the keyring no longer
holds, and deleting it would lose data. Leftovers without a manifest go after the grace
period, as before (they are not backups).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from cleo_operator.api.backup import RetentionSpec
from cleo_operator.backup import metrics
from cleo_operator.backup.catalog import list_backups, manifest_name, verification_name
from cleo_operator.backup.errors import BackupError
from cleo_operator.backup.storage import Storage
from cleo_operator.crypto import KeyWrapper

__all__ = [
    "DEFAULT_KEEP_ONE_OFFS",
    "DEFAULT_ORPHAN_GRACE",
    "BackupInfo",
    "PruneResult",
    "RetentionPolicy",
    "prune",
    "select_to_keep",
]

logger = logging.getLogger(__name__)

DEFAULT_ORPHAN_GRACE: Final = timedelta(hours=6)
"""How old a leftover (an archive without manifest, an unfinished write) must be to go."""

DEFAULT_KEEP_ONE_OFFS: Final = 3
"""How many one-off archives (``spec.from``) pruning keeps, newest first."""


@dataclass(frozen=True)
class BackupInfo:
    """What retention needs to know of one backup."""

    id: str
    """The backup id."""
    time: datetime
    """When the backup started (timezone-aware)."""
    verified: bool = False
    """Whether its latest verification passed."""
    one_off: bool = False
    """Whether a one-off (``spec.from``) made it: the rules do not count it."""


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """How many backups to keep; None means the rule is not used (see the module doc)."""

    keep_last: int | None = None
    """Keep the newest N backups."""
    keep_hourly: int | None = None
    """Keep the newest backup of each of the last N hours."""
    keep_daily: int | None = None
    """Keep the newest backup of each of the last N days."""
    keep_weekly: int | None = None
    """Keep the newest backup of each of the last N ISO weeks."""
    keep_monthly: int | None = None
    """Keep the newest backup of each of the last N months."""
    keep_one_offs: int = DEFAULT_KEEP_ONE_OFFS
    """Keep the newest N one-off archives; the rules above never count them. Not a rule:
    it prunes nothing while no rule is set."""

    def __post_init__(self) -> None:
        for name in (
            "keep_last",
            "keep_hourly",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "keep_one_offs",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"retention {name} must be a count >= 0 or unset, not {value!r}")

    @property
    def keeps_everything(self) -> bool:
        """True when no rule is set: nothing is ever pruned."""
        return all(
            v is None
            for v in (
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
            )
        )

    @classmethod
    def from_spec(cls, spec: RetentionSpec | None) -> RetentionPolicy:
        """The policy of a CleoBackup's `spec.retention` (unset: keep everything)."""
        if spec is None:
            return cls()
        return cls(
            keep_last=spec.keep_last,
            keep_hourly=spec.keep_hourly,
            keep_daily=spec.keep_daily,
            keep_weekly=spec.keep_weekly,
            keep_monthly=spec.keep_monthly,
        )


def _hour_index(moment: datetime, _tz: tzinfo) -> int:
    return int(moment.timestamp() // 3600)


def _day_index(moment: datetime, tz: tzinfo) -> int:
    return moment.astimezone(tz).date().toordinal()


def _week_index(moment: datetime, tz: tzinfo) -> int:
    # Ordinal 1 (0001-01-01) is a Monday, so this counts ISO weeks (Monday to Sunday).
    return (moment.astimezone(tz).date().toordinal() - 1) // 7


def _month_index(moment: datetime, tz: tzinfo) -> int:
    local = moment.astimezone(tz)
    return local.year * 12 + local.month - 1


_PERIODS: Final[tuple[tuple[str, Callable[[datetime, tzinfo], int]], ...]] = (
    ("keep_hourly", _hour_index),
    ("keep_daily", _day_index),
    ("keep_weekly", _week_index),
    ("keep_monthly", _month_index),
)


def select_to_keep(
    backups: Sequence[BackupInfo],
    policy: RetentionPolicy,
    *,
    now: datetime,
    tz: tzinfo = UTC,
) -> set[str]:
    """The ids of `backups` to keep under `policy` at `now`; see the module docstring."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (datetime.now(UTC))")
    for backup in backups:
        if backup.time.tzinfo is None:
            raise ValueError(f"backup {backup.id}: its time must be timezone-aware")
    if not backups:
        return set()
    if policy.keeps_everything:
        return {b.id for b in backups}
    # Backups dated after `now` are kept and otherwise left out: every rule counts from now.
    keep: set[str] = {b.id for b in backups if b.time > now}
    placed = sorted(
        (b for b in backups if b.time <= now), key=lambda b: (b.time, b.id), reverse=True
    )
    # One-offs only ever compete with one-offs (see the module docstring).
    keep.update(b.id for b in [b for b in placed if b.one_off][: policy.keep_one_offs])
    newest_first = [b for b in placed if not b.one_off]
    if not newest_first:
        return keep
    keep.add(newest_first[0].id)
    verified = [b for b in newest_first if b.verified]
    if verified:
        keep.add(verified[0].id)
    if policy.keep_last:
        keep.update(b.id for b in newest_first[: policy.keep_last])
    for rule, index in _PERIODS:
        count: int | None = getattr(policy, rule)
        if not count:
            continue
        current = index(now, tz)
        seen: set[int] = set()
        for backup in newest_first:  # the first one met in a period is its newest
            period = index(backup.time, tz)
            if current - count < period <= current and period not in seen:
                seen.add(period)
                keep.add(backup.id)
    return keep


@dataclass(frozen=True)
class PruneResult:
    """What `prune` kept and removed."""

    kept: tuple[str, ...]
    """Ids of the tenant's backups kept, oldest first."""
    deleted: tuple[str, ...]
    """Ids of the backups deleted (or that would be, in a dry run), oldest first."""
    leftovers_deleted: tuple[str, ...] = ()
    """Object names of leftovers removed (archives without a manifest, old records)."""
    incomplete_removed: int = 0
    """Unfinished writes of crashed runs removed."""
    incomplete_note: str | None = None
    """Why unfinished writes were not looked for, when the storage cannot (an object
    store's ``unfinished_uploads``: they are its lifecycle rule's)."""
    problems: tuple[str, ...] = field(default=())
    """What could not be read or deleted; the next prune tries again."""
    dry_run: bool = False
    """True when nothing was deleted, only reported."""
    unauthenticated: tuple[str, ...] = ()
    """Ids of backups whose manifest does not authenticate: neither kept by a rule nor
    deleted (see the module docstring)."""


def _incomplete_note(storage: Storage) -> str | None:
    note = getattr(storage, "unfinished_uploads", None)
    return note if isinstance(note, str) else None


def prune(
    storage: Storage,
    *,
    tenant: str,
    policy: RetentionPolicy,
    keyring: KeyWrapper,
    now: datetime | None = None,
    tz: tzinfo = UTC,
    orphan_grace: timedelta = DEFAULT_ORPHAN_GRACE,
    dry_run: bool = False,
) -> PruneResult:
    """Delete the backups of `tenant` in `storage` that `policy` does not keep.

    `keyring` is the tenant's: only backups whose manifest it authenticates are counted
    and deleted, and only records it authenticates make a backup verified. Other tenants'
    backups in the same storage are never touched; leftovers that belong to no backup are
    removed once older than `orphan_grace`.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    catalog = list_backups(storage, tenant=tenant, keyring=keyring)
    problems = list(catalog.problems)
    infos = [
        BackupInfo(id=b.backup_id, time=b.time, verified=b.verified, one_off=b.manifest.one_off)
        for b in catalog.backups
    ]
    keep = select_to_keep(infos, policy, now=moment, tz=tz)
    doomed = [b for b in catalog.backups if b.backup_id not in keep]
    deleted: list[str] = []
    leftovers: list[str] = []
    incomplete = 0
    if not dry_run:
        for backup in doomed:
            try:
                # Manifest first: from this instant the backup does not exist; what follows
                # only frees space.
                storage.delete(manifest_name(backup.backup_id))
                deleted.append(backup.backup_id)
                storage.delete(backup.archive.name)
                storage.delete(verification_name(backup.backup_id))
            except BackupError as error:
                problems.append(error.message)
        cutoff = moment - orphan_grace
        for orphan in catalog.orphans:
            if orphan.modified >= cutoff:
                continue
            try:
                if storage.delete(orphan.name):
                    leftovers.append(orphan.name)
            except BackupError as error:
                problems.append(error.message)
        try:
            incomplete = storage.clean_incomplete(older_than=cutoff)
        except BackupError as error:
            problems.append(error.message)
        metrics.observe_prune(tenant=tenant, deleted=len(deleted))
    else:
        deleted = [b.backup_id for b in doomed]
    if deleted:
        logger.info(
            "retention of tenant %s: %s %d backups (%s), kept %d",
            tenant,
            "would delete" if dry_run else "deleted",
            len(deleted),
            ", ".join(deleted),
            len(keep),
        )
    return PruneResult(
        kept=tuple(b.backup_id for b in catalog.backups if b.backup_id in keep),
        deleted=tuple(deleted),
        leftovers_deleted=tuple(leftovers),
        incomplete_removed=incomplete,
        incomplete_note=_incomplete_note(storage),
        problems=tuple(problems),
        dry_run=dry_run,
        unauthenticated=tuple(catalog.unauthenticated),
    )
