"""Restoring archives, and proving that they restore (verification).

Why decrypt to a temporary file before touching the target: the archive is an encrypted
stream whose chunks authenticate one at a time, so only once the *whole* stream has been
read is it known to be complete and unaltered. Piping it straight into pg_restore would
let a truncated or tampered archive half-restore before the problem showed. So a restore
goes, in this order, and stops at the first problem with the target untouched:

1. read the manifest and open the data key: unwrapping under the manifest's digest proves
   the manifest authentic (`ManifestInvalid` if it was edited, `KeyUnavailable` if the
   keyring lacks the key version, `WrongTenant` if it is another tenant's backup);
2. compare the archive's size with the manifest (`ArchiveCorrupt`: truncated or extended);
3. check the target's login and database, read only: a login that holds (or may `SET
   ROLE` to) superuser, CREATEROLE, BYPASSRLS, REPLICATION or a predefined role with
   server-wide rights is refused (`RestoreFailed`) unless `allow_privileged_target`,
   because a dump is the tenant's code and runs with the restoring login's rights; and
   the database must have no tables (`TargetNotEmpty`): a restore never mixes two
   databases;
4. decrypt into a private temporary file (mode 0600, removed afterwards): every chunk's
   tag, the final-chunk flag, and then the SHA-256 of the archive and of the dump against
   the manifest (`ArchiveCorrupt` on any difference);
5. `pg_restore --no-owner --exit-on-error --single-transaction`, so that even a failure of
   pg_restore itself (a missing role, an extension the target lacks) leaves the target
   as it was (`RestoreFailed` with pg_restore's message); stopped after a timeout, since
   the dump's code may sleep forever.

Verification restores into a scratch database that it creates and always drops, then
compares each table's row count and checksum with what the manifest recorded from the
backup's snapshot (`cleo_operator.backup.contents`). The admin login only creates and
drops: the scratch database is owned by a throwaway unprivileged login, and pg_restore and
every read of the restored data run as that login (`cleo_operator.backup.scratch` says
why `SET ROLE` would not do). Its verdict is a result, not an
exception: an archive that does not restore is a *failed verification*; only being
unable to run the verification at all (the site is down) raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, TypedDict, cast

import psycopg

from cleo_operator.backup import metrics
from cleo_operator.backup.catalog import (
    VerificationRecord,
    open_archive_key,
    read_manifest,
    write_verification,
)
from cleo_operator.backup.connection import ConnectionInfo, libpq_environment
from cleo_operator.backup.contents import prepare_session, table_stats
from cleo_operator.backup.errors import (
    ArchiveCorrupt,
    BackupError,
    KeyUnavailable,
    ManifestInvalid,
    RestoreFailed,
    SourceUnavailable,
    TargetNotEmpty,
    WrongTenant,
    redact,
)
from cleo_operator.backup.manifest import Manifest, TableStats
from cleo_operator.backup.scratch import SCRATCH_DATABASE_PREFIX, scratch_database
from cleo_operator.backup.storage import ReadStream, Storage
from cleo_operator.backup.tools import StderrTail, describe_exit, tool_version
from cleo_operator.core.times import rfc3339_precise
from cleo_operator.crypto import (
    KeyWrapper,
    MalformedEnvelope,
    StreamKey,
    Tampered,
    UnknownKeyVersion,
    iter_decrypted,
)
from cleo_operator.kube.audit import audit
from cleo_operator.observability.tracing import span

__all__ = [
    "RestoreResult",
    "VerificationReport",
    "VerificationResult",
    "compare_tables",
    "decrypt_archive",
    "open_archive_key",
    "restore_archive",
    "verify_backup",
]

logger = logging.getLogger(__name__)

_MAX_REPORTED_MISMATCHES: Final = 20
RESTORE_TIMEOUT_SECONDS: Final = 6 * 3600
"""How long pg_restore may run before it is stopped (a dump's code may sleep forever)."""
READ_TIMEOUT_MS: Final = 3600 * 1000
"""`statement_timeout` of each statement that reads restored data."""
_DANGEROUS_PREDEFINED_ROLES: Final = (
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
)
"""Predefined roles whose rights a dump's code must not get through the restoring login."""
_FREE_SPACE_MARGIN: Final = 64 << 20
"""Room left on the work volume beyond the dump itself (pg_restore, other files)."""


@dataclass(frozen=True, kw_only=True)
class RestoreResult:
    """What a restore did."""

    backup_id: str
    """The backup restored."""
    tenant: str
    """Its tenant."""
    target: str
    """The database restored into (`database ... on host:port`)."""
    tables: int
    """Tables the manifest lists (all restored, in one transaction)."""
    rows: int
    """Rows the manifest lists."""
    dump_size: int
    """Bytes of the decrypted dump."""
    duration_seconds: float
    """Wall time of the restore."""


class _HashingReader:
    """Reads from `source`, hashing and counting what passes (the archive's digest)."""

    def __init__(self, source: ReadStream) -> None:
        self._source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def decrypt_archive(*, storage: Storage, manifest: Manifest, key: StreamKey, out: BinaryIO) -> int:
    """Decrypt the archive into `out`, checking everything; returns the dump's size.

    Raises ArchiveCorrupt when a chunk fails authentication, the stream is truncated or
    extended, or a size or SHA-256 differs from the manifest; never writes more than the
    manifest's plaintext size to `out`. `out` is complete and
    authentic only when this returns.
    """
    where = f"{storage.description}: {manifest.archive}"
    info = storage.stat(manifest.archive)
    if info is None:
        raise ArchiveCorrupt(f"{where} is missing: this backup cannot be restored")
    if info.size != manifest.archive_size:
        raise ArchiveCorrupt(
            f"{where} is {info.size} bytes but its manifest says {manifest.archive_size}: it "
            f"was {'cut short' if info.size < manifest.archive_size else 'extended'} (an "
            "interrupted copy or upload?); use another backup"
        )
    plaintext_sha256 = hashlib.sha256()
    written = 0
    with storage.open(manifest.archive) as raw:
        reader = _HashingReader(raw)
        try:
            # iter_decrypted only calls read(); _HashingReader is that much of a BinaryIO.
            for chunk in iter_decrypted(cast(BinaryIO, reader), key.key_for):
                if written + len(chunk) > manifest.plaintext_size:
                    # The free-space check trusted the declared size: an archive (even an
                    # authentic one) that decrypts to more must not fill the work volume.
                    raise ArchiveCorrupt(
                        f"{where} decrypts to more than the {manifest.plaintext_size} bytes "
                        "its manifest declares; stopped there. This archive cannot be "
                        "restored: use another backup"
                    )
                plaintext_sha256.update(chunk)
                out.write(chunk)
                written += len(chunk)
        except (Tampered, MalformedEnvelope, UnknownKeyVersion) as error:
            raise ArchiveCorrupt(
                f"{where}: {error.message}. This archive cannot be restored: use another backup"
            ) from None
    problems = []
    if reader.size != manifest.archive_size:
        problems.append(f"{reader.size} bytes were read, the manifest says {manifest.archive_size}")
    if reader.sha256.hexdigest() != manifest.archive_sha256:
        problems.append("the archive's SHA-256 differs from the manifest's")
    if written != manifest.plaintext_size:
        problems.append(f"the dump is {written} bytes, the manifest says {manifest.plaintext_size}")
    if plaintext_sha256.hexdigest() != manifest.plaintext_sha256:
        problems.append("the dump's SHA-256 differs from the manifest's")
    if problems:
        raise ArchiveCorrupt(
            f"{where} decrypts but does not match its manifest: {'; '.join(problems)}; use "
            "another backup"
        )
    return written


def _connect(info: ConnectionInfo, *, doing: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(**info.psycopg_kwargs(), autocommit=True)
    except psycopg.Error as error:
        detail = error.diag.message_primary if error.diag.message_primary else str(error)
        raise SourceUnavailable(
            f"cannot connect to {info.where} as {info.user!r} for {doing}: "
            f"{redact(' '.join(detail.split()), [info.password])}"
        ) from None


def _target_privileges(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """What the session user could do beyond owning a database: each as a short phrase.

    Roles it may SET ROLE to count as its own: a dump's code can switch to them.
    """
    rows = conn.execute(
        """
        SELECT r.rolname = session_user, r.rolname, r.rolsuper, r.rolcreaterole,
               r.rolbypassrls, r.rolreplication
          FROM pg_roles r
         WHERE pg_has_role(session_user, r.oid, 'MEMBER')
           AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolreplication
                OR r.rolname = ANY(%s))
         ORDER BY 1 DESC, 2
        """,
        (list(_DANGEROUS_PREDEFINED_ROLES),),
    ).fetchall()
    if rows and rows[0][0] and rows[0][2]:
        return ["is a superuser"]  # which may become every role: nothing more to say
    found = []
    for own, name, superuser, createrole, bypassrls, replication in rows:
        rights = [
            label
            for flag, label in (
                (superuser, "superuser"),
                (createrole, "CREATEROLE"),
                (bypassrls, "BYPASSRLS"),
                (replication, "REPLICATION"),
            )
            if flag
        ]
        what = ", ".join(rights) if rights else "a predefined role with server-wide rights"
        found.append(f"is {what}" if own else f"can become role {name!r} ({what})")
    return found


def _check_target(info: ConnectionInfo, *, allow_privileged: bool) -> int:
    """Refuse a privileged restoring login (unless allowed); return the target's relations."""
    with _connect(info, doing="checking the restore target") as conn:
        if not allow_privileged:
            rights = _target_privileges(conn)
            if rights:
                raise RestoreFailed(
                    f"refusing to restore into {info.where} as {info.user!r}: that login "
                    f"{'; '.join(rights)}. A dump is the tenant's code (functions in "
                    "constraints, defaults and indexes run while it restores) and it would "
                    "run with those rights. Restore as an unprivileged login that owns the "
                    "target database (for example the tenant's own role), or, only for an "
                    "archive you trust completely, pass --allow-privileged-target "
                    "(allow_privileged_target=True); nothing was changed"
                )
        return _user_relations(conn)


def _user_relations(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(
        """
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
           AND n.nspname NOT LIKE 'pg\\_temp\\_%'
        """
    ).fetchone()
    return int(str(row[0])) if row else 0


def _conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def _private_temp_file(work_dir: Path | None, *, needed: int) -> Iterator[BinaryIO]:
    folder = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    try:
        free = shutil.disk_usage(folder).free
    except OSError as error:
        raise RestoreFailed(
            f"the restore work directory {folder} is not usable: {error.strerror}"
        ) from None
    if free < needed + _FREE_SPACE_MARGIN:
        raise RestoreFailed(
            f"the restore work directory {folder} has {free} bytes free, but the decrypted "
            f"dump needs {needed} (plus {_FREE_SPACE_MARGIN} to spare): point the work "
            "directory at a larger volume"
        )
    # NamedTemporaryFile is created 0600 and removed on close: the plaintext dump of a
    # tenant's data never outlives the restore.
    with tempfile.NamedTemporaryFile(prefix="cleo-restore-", suffix=".dump", dir=folder) as handle:
        yield cast(BinaryIO, handle)


def restore_archive(
    *,
    storage: Storage,
    backup_id: str,
    keyring: KeyWrapper,
    target: ConnectionInfo,
    tenant: str | None = None,
    role: str | None = None,
    pg_restore: str | os.PathLike[str] = "pg_restore",
    work_dir: str | os.PathLike[str] | None = None,
    single_transaction: bool = True,
    no_privileges: bool = False,
    allow_privileged_target: bool = False,
    timeout_seconds: float = RESTORE_TIMEOUT_SECONDS,
    actor: str | None = None,
    audited: bool = True,
) -> RestoreResult:
    """Restore backup `backup_id` from `storage` into the empty database `target`.

    The target's login must hold no privilege a dump's code could use: not superuser,
    CREATEROLE, BYPASSRLS or REPLICATION, and no way to SET ROLE to such a role or to a
    predefined role with server-wide rights (`RestoreFailed` before anything changed).
    `allow_privileged_target` lifts that check, for archives trusted completely.
    pg_restore is stopped after `timeout_seconds`.

    `tenant`, when given, must be the backup's tenant (a guard against restoring another
    tenant's data). `role` becomes the owner of what is restored (`pg_restore --role`);
    unset, the target's login role. `work_dir` holds the decrypted dump while it is
    restored (default: the system temp folder; it needs the dump's size free).
    `no_privileges` skips GRANT/REVOKE (for a site where the original roles do not exist).
    See the module docstring for the order of checks and the errors. The restore, or its
    refusal, is audited (`kube.audit`: a log line, no Event) with `actor` (who asked, when
    known; the operator's identity otherwise); a verification's scratch copy is not
    (`audited=False`), its verdict is logged by `verify_backup`.
    """
    started = time.monotonic()
    manifest_tenant = tenant or "unknown"
    try:
        with span("restore", {"cleo.backup_id": backup_id, "cleo.tenant": tenant or ""}):
            result = _restore(
                storage=storage,
                backup_id=backup_id,
                keyring=keyring,
                target=target,
                tenant=tenant,
                role=role,
                pg_restore=pg_restore,
                work_dir=Path(work_dir) if work_dir is not None else None,
                single_transaction=single_transaction,
                no_privileges=no_privileges,
                allow_privileged_target=allow_privileged_target,
                timeout_seconds=timeout_seconds,
                started=started,
            )
    except BackupError as error:
        metrics.observe_restore(tenant=manifest_tenant, result=error.reason)
        if not audited:
            raise
        audit(
            None,
            {"kind": "Database", "metadata": {"name": target.where}},
            action="RestoreFailed",
            message=f"backup {backup_id} of tenant {manifest_tenant} into {target.where}: "
            f"{error.reason}",
            actor=actor,
            type="Warning",
        )
        raise
    metrics.observe_restore(tenant=result.tenant, result="ok")
    if not audited:
        return result
    audit(
        None,
        {"kind": "Database", "metadata": {"name": target.where}},
        action="Restored",
        message=f"restored backup {result.backup_id} of tenant {result.tenant} into "
        f"{result.target} in {result.duration_seconds:.1f}s",
        actor=actor,
    )
    return result


def _restore(
    *,
    storage: Storage,
    backup_id: str,
    keyring: KeyWrapper,
    target: ConnectionInfo,
    tenant: str | None,
    role: str | None,
    pg_restore: str | os.PathLike[str],
    work_dir: Path | None,
    single_transaction: bool,
    no_privileges: bool,
    allow_privileged_target: bool,
    timeout_seconds: float,
    started: float,
) -> RestoreResult:
    try:
        with span("restore manifest"):
            manifest = read_manifest(storage, backup_id)
    except ValueError as error:  # a malformed id
        raise ManifestInvalid(str(error)) from None
    source = f"{storage.description}: backup {backup_id}"
    if tenant is not None and manifest.tenant != tenant:
        raise WrongTenant(
            f"{source} belongs to tenant {manifest.tenant!r}, not {tenant!r}: restore a backup "
            "of this tenant, or name the right tenant"
        )
    key = open_archive_key(manifest, keyring, source=source)
    try:
        tool_version(pg_restore, what="pg_restore")
    except ValueError as error:
        raise RestoreFailed(str(error)) from None
    with span("restore check target"):
        present = _check_target(target, allow_privileged=allow_privileged_target)
    if present:
        raise TargetNotEmpty(
            f"{target.where} already holds {present} tables, views or sequences; restore into "
            "a new, empty database and switch to it once the restore succeeded"
        )
    with _private_temp_file(work_dir, needed=manifest.plaintext_size) as dump:
        with span("restore download, decrypt"):
            size = decrypt_archive(storage=storage, manifest=manifest, key=key, out=dump)
            dump.flush()
        with span("restore pg_restore"):
            _run_pg_restore(
                pg_restore,
                dump_path=dump.name,
                target=target,
                role=role,
                single_transaction=single_transaction,
                no_privileges=no_privileges,
                timeout_seconds=timeout_seconds,
            )
    return RestoreResult(
        backup_id=manifest.backup_id,
        tenant=manifest.tenant,
        target=target.where,
        tables=len(manifest.tables),
        rows=manifest.total_rows,
        dump_size=size,
        duration_seconds=time.monotonic() - started,
    )


def _run_pg_restore(
    pg_restore: str | os.PathLike[str],
    *,
    dump_path: str,
    target: ConnectionInfo,
    role: str | None,
    single_transaction: bool,
    no_privileges: bool,
    timeout_seconds: float,
) -> None:
    # The database name goes as a conninfo fragment so that a name containing '=' is not
    # taken for a connection string; host, user and the passfile come from the environment.
    args = [
        os.fspath(pg_restore),
        "--no-owner",
        "--exit-on-error",
        "--no-password",
        f"--dbname=dbname={_conninfo_quote(target.dbname)}",
    ]
    if single_transaction:
        args.append("--single-transaction")
    if role:
        args.append(f"--role={role}")
    if no_privileges:
        args.append("--no-privileges")
    args.append(dump_path)
    # The passfile lives as long as the `with`: pg_restore runs to its end inside it.
    with libpq_environment(target) as env:
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as error:
            raise RestoreFailed(f"cannot start pg_restore ({args[0]}): {error.strerror}") from None
        assert process.stderr is not None
        # Only stderr's tail is kept: an error quotes the tenant's data (a function's RAISE,
        # a CHECK's value), whose length the tenant chooses.
        stderr = StderrTail(process.stderr, secrets=[target.password])
        try:
            returncode = process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            # pg_restore's server session ends with the transaction (and a verification's
            # scratch database is dropped WITH (FORCE) right after).
            raise RestoreFailed(
                f"pg_restore into {target.where} did not finish within {timeout_seconds:.0f}s "
                "and was stopped; nothing was changed if it ran in one transaction. A dump "
                "whose code sleeps or loops never finishes: look at the archive's functions"
            ) from None
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            stderr.join()
            process.stderr.close()
    if returncode != 0:
        state = (
            "nothing was changed (one transaction)"
            if single_transaction
            else "the target may be partly restored: drop it and restore again"
        )
        raise RestoreFailed(
            f"pg_restore into {target.where} failed ({describe_exit(returncode)}); "
            f"{state}: {stderr.text()}"
        )


# --------------------------------------------------------------------------- verification


class VerificationReport(TypedDict):
    """A verification's result as JSON (camelCase), for the Job's report and status."""

    backupId: str
    tenant: str
    passed: bool
    reason: str
    message: str
    tablesChecked: int
    rowsChecked: int
    time: str
    durationSeconds: float


@dataclass(frozen=True, kw_only=True)
class VerificationResult:
    """The verdict on one backup; the caller writes it to status."""

    backup_id: str
    """The backup verified."""
    tenant: str
    """Its tenant."""
    passed: bool
    """True when the archive restored and every table matched the manifest."""
    reason: str
    """`Verified`, `ContentMismatch`, or the reason of the error that stopped the restore."""
    message: str
    """What was found, for people."""
    tables_checked: int
    """Tables compared."""
    rows_checked: int
    """Rows counted in the restored copy."""
    mismatches: tuple[str, ...] = field(default=())
    """One line per table that differs (at most 20)."""
    finished: datetime
    """When the verification finished."""
    duration_seconds: float
    """Wall time, restore included."""

    def to_report(self) -> VerificationReport:
        return {
            "backupId": self.backup_id,
            "tenant": self.tenant,
            "passed": self.passed,
            "reason": self.reason,
            "message": self.message,
            "tablesChecked": self.tables_checked,
            "rowsChecked": self.rows_checked,
            "time": rfc3339_precise(self.finished),
            "durationSeconds": round(self.duration_seconds, 3),
        }


def compare_tables(
    expected: dict[str, TableStats] | Manifest, actual: dict[str, TableStats]
) -> list[str]:
    """Differences between recorded and restored tables, one line each (empty: equal).

    Checksums are compared only where the recorded side has one.
    """
    recorded = dict(expected.tables) if isinstance(expected, Manifest) else expected
    problems = []
    for name in sorted(recorded.keys() | actual.keys()):
        want, got = recorded.get(name), actual.get(name)
        if want is None:
            problems.append(f"{name}: restored, but not in the backup")
        elif got is None:
            problems.append(f"{name}: in the backup ({want.rows} rows), missing after restore")
        elif want.rows != got.rows:
            problems.append(f"{name}: {want.rows} rows in the backup, {got.rows} restored")
        elif want.checksum is not None and want.checksum != got.checksum:
            problems.append(f"{name}: same row count ({got.rows}) but different contents")
    return problems


def verify_backup(
    *,
    storage: Storage,
    backup_id: str,
    keyring: KeyWrapper,
    admin: ConnectionInfo,
    tenant: str | None = None,
    pg_restore: str | os.PathLike[str] = "pg_restore",
    work_dir: str | os.PathLike[str] | None = None,
    record: bool = True,
    now: datetime | None = None,
    restore_timeout_seconds: float = RESTORE_TIMEOUT_SECONDS,
) -> VerificationResult:
    """Restore backup `backup_id` into a scratch database and compare it with the manifest.

    `admin` logs in to the site and needs CREATEDB and CREATEROLE: it only creates and
    drops a throwaway unprivileged login and the scratch database that login owns
    (`cleo_operator.backup.scratch`); pg_restore and every read of the restored data run
    as that login, never as `admin`. Both are dropped whatever happens. With
    `record`, the verdict is also stored beside the backup (`ID.verification.json`), sealed
    with the tenant keyring (`cleo_operator.backup.catalog`), which retention reads to
    protect the newest verified backup. pg_restore is stopped after
    `restore_timeout_seconds` (a failed verification): a dump's code may sleep forever.

    Raises only when the verification cannot run (`SourceUnavailable`, `StorageError`);
    an archive that does not restore or does not match is a failed result.
    """
    started = time.monotonic()
    try:
        manifest = read_manifest(storage, backup_id)
    except ValueError as error:
        raise ManifestInvalid(str(error)) from None
    if tenant is not None and manifest.tenant != tenant:
        raise WrongTenant(
            f"backup {backup_id} belongs to tenant {manifest.tenant!r}, not {tenant!r}"
        )
    scratch = (
        f"{SCRATCH_DATABASE_PREFIX}{backup_id.lower().replace('-', '_')}_{secrets.token_hex(3)}"
    )
    actual: dict[str, TableStats] = {}
    try:
        with (
            span("verify", {"cleo.backup_id": backup_id, "cleo.tenant": manifest.tenant}),
            scratch_database(admin, name=scratch, purpose=f"for backup {backup_id}") as verifier,
            _reading_session(verifier) as reader,
        ):
            restore_archive(
                storage=storage,
                backup_id=backup_id,
                keyring=keyring,
                target=verifier,
                tenant=manifest.tenant,
                pg_restore=pg_restore,
                work_dir=work_dir,
                no_privileges=True,
                timeout_seconds=restore_timeout_seconds,
                audited=False,  # a scratch copy, dropped after the check: not a restore
            )
            with span("verify compare tables"):
                actual = read_restored_tables(
                    reader,
                    where=verifier.where,
                    checksums=manifest.checksum_algorithm is not None,
                )
    except (
        ArchiveCorrupt,
        ManifestInvalid,
        KeyUnavailable,
        RestoreFailed,
        TargetNotEmpty,
    ) as error:
        result = _verdict(
            manifest,
            passed=False,
            reason=error.reason,
            message=error.message,
            actual={},
            mismatches=(),
            started=started,
            now=now,
        )
    else:
        mismatches = compare_tables(manifest, actual)
        if mismatches:
            message = (
                f"backup {backup_id} restored, but {len(mismatches)} of "
                f"{len(set(manifest.tables) | set(actual))} tables differ from the backup's "
                "snapshot: " + "; ".join(mismatches[:3])
            )
        else:
            message = (
                f"backup {backup_id} restored: {len(actual)} tables and "
                f"{sum(t.rows for t in actual.values())} rows match the backup's snapshot"
            )
        result = _verdict(
            manifest,
            passed=not mismatches,
            reason="ContentMismatch" if mismatches else "Verified",
            message=message,
            actual=actual,
            mismatches=tuple(mismatches[:_MAX_REPORTED_MISMATCHES]),
            started=started,
            now=now,
        )
    if record:
        write_verification(
            storage,
            VerificationRecord(
                backup_id=backup_id,
                time=result.finished,
                passed=result.passed,
                tables_checked=result.tables_checked,
                message=result.message,
            ),
            manifest=manifest,
            keyring=keyring,
        )
    metrics.observe_verification(
        tenant=manifest.tenant, finished_at=result.finished.timestamp(), passed=result.passed
    )
    log = logger.info if result.passed else logger.warning
    log("verification of backup %s of tenant %s: %s", backup_id, manifest.tenant, result.message)
    return result


@contextlib.contextmanager
def _reading_session(info: ConnectionInfo) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A session for reading restored data, opened *before* the restore.

    Opened first because the dump's code runs as the same login and may change what a
    later login would meet: the role's password (any role may set its own), its role or
    database defaults (`ALTER ROLE ... SET`). A session that exists already keeps its own.
    """
    try:
        conn = psycopg.connect(
            **info.psycopg_kwargs(),
            autocommit=True,
            options=f"-c statement_timeout={READ_TIMEOUT_MS}",
        )
    except psycopg.Error as error:
        detail = error.diag.message_primary if error.diag.message_primary else str(error)
        raise SourceUnavailable(
            f"cannot connect to {info.where} as {info.user!r} for verification: "
            f"{redact(' '.join(detail.split()), [info.password])}"
        ) from None
    with conn:
        yield conn


def read_restored_tables(
    conn: psycopg.Connection[tuple[object, ...]], *, where: str, checksums: bool
) -> dict[str, TableStats]:
    """Row counts and checksums of a restored database, read in `conn` (unprivileged).

    Every statement has a `statement_timeout`; names come from the database's catalog and
    are only ever used as quoted identifiers (`cleo_operator.backup.contents`). A failure
    (the dump's code may even end this session: it runs as the same role) is a
    `RestoreFailed`, so the verification fails rather than waits.
    """
    try:
        prepare_session(conn)
        return table_stats(conn, checksums=checksums)
    except psycopg.Error as error:
        raise RestoreFailed(
            f"reading the restored copy in {where} failed: "
            f"{error.diag.message_primary or type(error).__name__}"
        ) from None


def _verdict(
    manifest: Manifest,
    *,
    passed: bool,
    reason: str,
    message: str,
    actual: dict[str, TableStats],
    mismatches: tuple[str, ...],
    started: float,
    now: datetime | None,
) -> VerificationResult:
    return VerificationResult(
        backup_id=manifest.backup_id,
        tenant=manifest.tenant,
        passed=passed,
        reason=reason,
        message=message,
        tables_checked=len(actual),
        rows_checked=sum(t.rows for t in actual.values()),
        mismatches=mismatches,
        finished=(now or datetime.now(UTC)).astimezone(UTC),
        duration_seconds=time.monotonic() - started,
    )
