"""The backup runner: pg_dump -> encrypt -> storage, streaming, with a manifest at the end.

How one backup goes:

1. A fresh data key is made for this backup alone (`new_stream_key`); wrapping it once
   right away proves the tenant keyring works before anything is dumped.
2. A session on the tenant database opens a `REPEATABLE READ READ ONLY` transaction and
   exports its snapshot (`pg_export_snapshot()`). pg_dump is started with `--snapshot`, so
   it dumps exactly what that transaction sees, while the transaction itself counts the
   rows and checksums every table (`cleo_operator.backup.contents`) in a second thread:
   the manifest's table statistics describe the very data in the archive, however busy
   the database is, and the scan overlaps the dump instead of adding to it.
3. pg_dump's stdout (`--format=custom`) is read in 1 MiB pieces, hashed (SHA-256 of the
   dump) and fed to `EncryptingWriter`, whose output is hashed again (SHA-256 of the
   archive) and written to `storage.writer`, an atomic temporary object. Memory stays at a
   few chunks whatever the database size; nothing is ever read whole.
4. Only when pg_dump exited 0 *and* the statistics are complete is the final chunk written
   (until then the stream is detectably truncated) and the archive made visible.
5. The manifest is written last, atomically. Its data key is wrapped under a context that
   includes the manifest's digest (see `cleo_operator.backup.manifest`). A crash anywhere
   before leaves no manifest, hence no backup.

On any failure pg_dump is killed, the table scan cancelled, the temporary object removed,
and a `BackupError` says what failed: pg_dump's stderr (with the password redacted) for a
dump failure, the storage and the object for a storage failure.

The password reaches pg_dump through a private passfile (`PGPASSFILE`), never argv.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fcntl
import hashlib
import io
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, BinaryIO, Final, TypedDict, cast

import psycopg

from cleo_operator.api.backup import BackupRecord
from cleo_operator.backup import metrics
from cleo_operator.backup.catalog import archive_name, manifest_name
from cleo_operator.backup.connection import ConnectionInfo, libpq_environment
from cleo_operator.backup.contents import prepare_session, table_stats
from cleo_operator.backup.errors import (
    BackupError,
    DumpFailed,
    SourceUnavailable,
    StorageError,
    redact,
)
from cleo_operator.backup.manifest import (
    CHECKSUM_ALGORITHM,
    MadeBy,
    Manifest,
    TableStats,
    new_backup_id,
)
from cleo_operator.backup.storage import COPY_BUFFER_SIZE, Storage, WriteStream
from cleo_operator.backup.tools import StderrTail, describe_exit, tool_version
from cleo_operator.core.times import rfc3339_precise
from cleo_operator.crypto import CryptoError, EncryptingWriter, KeyWrapper, new_stream_key
from cleo_operator.crypto.stream import DEFAULT_CHUNK_SIZE
from cleo_operator.observability.tracing import span

__all__ = ["BackupReport", "BackupResult", "run_backup"]

logger = logging.getLogger(__name__)

_PIPE_SIZE: Final = 1 << 20
"""Ask for a 1 MiB pipe from pg_dump: fewer, larger reads (Linux; ignored elsewhere)."""

# Session settings of the snapshot session: it may sit idle in its transaction while
# pg_dump runs, and scans every table, so the site's defaults must not cut it off.
_SNAPSHOT_SESSION: Final[tuple[tuple[str, str], ...]] = (
    ("idle_in_transaction_session_timeout", "0"),
    ("statement_timeout", "0"),
)


class BackupReport(TypedDict):
    """A backup's result as JSON (camelCase, as the API writes), for the Job's report."""

    backupId: str
    tenant: str
    database: str
    storage: str
    archive: str
    manifest: str
    startTime: str
    endTime: str
    durationSeconds: float
    archiveSize: int
    dumpSize: int
    archiveSha256: str
    dumpSha256: str
    keyId: str
    tables: int
    rows: int
    serverVersion: str


@dataclass(frozen=True, kw_only=True)
class BackupResult:
    """What one successful backup made; the caller writes it to the CleoBackup's status."""

    backup_id: str
    """The backup's id (what restores and retention name it by)."""
    tenant: str
    """The tenant backed up."""
    database: str
    """The database dumped."""
    storage: str
    """Where the archive is (the storage's description)."""
    archive: str
    """Object name of the archive."""
    manifest_object: str
    """Object name of the manifest."""
    start_time: datetime
    """When the backup started."""
    end_time: datetime
    """When the manifest was written."""
    duration_seconds: float
    """Wall time, measured with a monotonic clock."""
    manifest: Manifest = field(repr=False)
    """The manifest as written."""

    @property
    def archive_size(self) -> int:
        """Bytes of the encrypted archive."""
        return self.manifest.archive_size

    @property
    def plaintext_size(self) -> int:
        """Bytes of the dump before encryption."""
        return self.manifest.plaintext_size

    def as_record(self) -> BackupRecord:
        """The CleoBackup status entry for this archive (`lastBackup`, `lastSuccessfulBackup`)."""
        return BackupRecord(
            time=rfc3339_precise(self.start_time),
            archive=f"{self.storage}: {self.archive}"[:1024],
            size_bytes=self.archive_size,
            duration_seconds=round(self.duration_seconds, 3),
        )

    def to_report(self) -> BackupReport:
        """The result as JSON-ready data (no secrets: ids, names, sizes, digests)."""
        return {
            "backupId": self.backup_id,
            "tenant": self.tenant,
            "database": self.database,
            "storage": self.storage,
            "archive": self.archive,
            "manifest": self.manifest_object,
            "startTime": rfc3339_precise(self.start_time),
            "endTime": rfc3339_precise(self.end_time),
            "durationSeconds": round(self.duration_seconds, 3),
            "archiveSize": self.manifest.archive_size,
            "dumpSize": self.manifest.plaintext_size,
            "archiveSha256": self.manifest.archive_sha256,
            "dumpSha256": self.manifest.plaintext_sha256,
            "keyId": self.manifest.key_id,
            "tables": len(self.manifest.tables),
            "rows": self.manifest.total_rows,
            "serverVersion": self.manifest.server_version,
        }


class _HashingWriter:
    """Passes writes on to `out`, hashing and counting them (the archive's digest)."""

    def __init__(self, out: WriteStream) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)


@dataclass
class _Snapshot:
    """The exporting session: it must stay open until pg_dump has finished."""

    conn: psycopg.Connection[tuple[object, ...]]
    snapshot_id: str
    server_version: str
    server_version_num: int
    database_size: int
    """The database's size on disk: the archive's size hint (compressed, it is rarely more)."""


class _StatsScan:
    """Counts and checksums the tables in the snapshot's transaction, in its own thread
    (which runs in a copy of the starting thread's context: the same trace)."""

    def __init__(self, snapshot: _Snapshot, *, checksums: bool, where: str) -> None:
        self._snapshot = snapshot
        self._checksums = checksums
        self._where = where
        self._stop = threading.Event()
        self.result: dict[str, TableStats] | None = None
        self.error: BaseException | None = None
        # In a copy of the caller's context: the current span (the run's) is the parent of
        # the scan's statement spans, which would otherwise be roots of traces of their own.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name="backup-table-stats",
            daemon=True,
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = table_stats(
                self._snapshot.conn, checksums=self._checksums, should_stop=self._stop.is_set
            )
        except BaseException as error:  # handed to the runner's thread, which raises it
            self.error = error

    def stop(self) -> None:
        """Stop early (the backup failed): cancel the running query and wait."""
        self._stop.set()
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._snapshot.conn.cancel_safe(timeout=5)
        self._thread.join(30)

    def wait(self) -> dict[str, TableStats]:
        """The statistics, once complete; DumpFailed if the scan failed."""
        self._thread.join()
        if self.error is not None:
            detail = _psycopg_detail(self.error)
            raise DumpFailed(
                f"reading the row counts and checksums of {self._where} in the backup's "
                f"snapshot failed: {detail}. The backup role must be able to read every table "
                "(it should own the database)."
            )
        assert self.result is not None
        return self.result


def _psycopg_detail(error: BaseException) -> str:
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        return error.diag.message_primary
    return " ".join(str(error).split()) or type(error).__name__


def _open_snapshot(source: ConnectionInfo) -> _Snapshot:
    try:
        conn = psycopg.connect(**source.psycopg_kwargs(), autocommit=True)
    except psycopg.Error as error:
        raise SourceUnavailable(
            f"cannot connect to {source.where} as {source.user!r}: "
            f"{redact(_psycopg_detail(error), [source.password])}. Check that the server runs "
            "and the credentials are right."
        ) from None
    try:
        for name, value in _SNAPSHOT_SESSION:
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        prepare_session(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), current_setting('server_version'), "
            "current_setting('server_version_num')::int, pg_database_size(current_database())"
        ).fetchone()
        assert row is not None
        return _Snapshot(
            conn=conn,
            snapshot_id=str(row[0]),
            server_version=str(row[1]),
            server_version_num=int(str(row[2])),
            database_size=int(str(row[3])),
        )
    except psycopg.Error as error:
        conn.close()
        raise SourceUnavailable(
            f"cannot open a snapshot of {source.where}: "
            f"{redact(_psycopg_detail(error), [source.password])}"
        ) from None


def _enlarge_pipe(stream: IO[bytes]) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), set_size, _PIPE_SIZE)


def run_backup(
    *,
    source: ConnectionInfo,
    tenant: str,
    storage: Storage,
    keyring: KeyWrapper,
    now: datetime | None = None,
    pg_dump: str | os.PathLike[str] = "pg_dump",
    checksums: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lock_wait_timeout_seconds: int | None = 300,
    made_by: MadeBy | None = None,
) -> BackupResult:
    """Back up the database `source` names, of `tenant`, into `storage`; see the module doc.

    `keyring` wraps the backup's data key (the tenant `Keyring`, or KEKs). `now` is the
    start time (default: the current time); it names the backup. `checksums=False` records
    row counts only (faster for very large databases; verification then compares counts).
    `lock_wait_timeout_seconds` makes pg_dump give up instead of queueing forever behind a
    lock (`None`: wait as long as it takes). `made_by` (the CleoBackup that runs it) goes
    into the manifest, authenticated like the rest.

    Raises a `BackupError`: `SourceUnavailable`, `DumpFailed`, `StorageError` (`StorageFull`)
    or, for a keyring that cannot wrap, `DumpFailed` with the keyring's reason.
    """
    start = (now or datetime.now(UTC)).astimezone(UTC)
    started = time.monotonic()
    try:
        with span("backup", {"cleo.tenant": tenant}) as current:
            result = _run_backup(
                source=source,
                tenant=tenant,
                storage=storage,
                keyring=keyring,
                start=start,
                started=started,
                pg_dump=pg_dump,
                checksums=checksums,
                chunk_size=chunk_size,
                lock_wait_timeout_seconds=lock_wait_timeout_seconds,
                made_by=made_by,
            )
            if current.is_recording():
                current.set_attribute("cleo.backup_id", result.backup_id)
                current.set_attribute("cleo.archive_size", result.archive_size)
    except BackupError as error:
        metrics.observe_backup_failure(tenant=tenant, reason=error.reason)
        logger.warning("backup of tenant %s failed: %s", tenant, error.message)
        raise
    except Exception:
        metrics.observe_backup_failure(tenant=tenant, reason="InternalError")
        raise
    metrics.observe_backup(
        tenant=tenant,
        finished_at=result.end_time.timestamp(),
        duration_seconds=result.duration_seconds,
        archive_size=result.archive_size,
        plaintext_size=result.plaintext_size,
    )
    logger.info(
        "backup %s of tenant %s: %d bytes (dump %d bytes), %d tables, %.1fs, in %s",
        result.backup_id,
        tenant,
        result.archive_size,
        result.plaintext_size,
        len(result.manifest.tables),
        result.duration_seconds,
        result.storage,
    )
    return result


def _run_backup(
    *,
    source: ConnectionInfo,
    tenant: str,
    storage: Storage,
    keyring: KeyWrapper,
    start: datetime,
    started: float,
    pg_dump: str | os.PathLike[str],
    checksums: bool,
    chunk_size: int,
    lock_wait_timeout_seconds: int | None,
    made_by: MadeBy | None,
) -> BackupResult:
    if not tenant:
        raise ValueError("tenant must not be empty")
    backup_id = new_backup_id(start)
    archive = archive_name(backup_id)
    try:
        dump_version = tool_version(pg_dump, what="pg_dump")
    except ValueError as error:
        raise DumpFailed(str(error)) from None
    try:
        with span("backup key"):  # a data key of its own, wrapped once to prove the keyring
            stream_key = new_stream_key(
                keyring,
                context={"tenant": tenant, "backup": backup_id, "purpose": "backup-archive"},
            )
    except CryptoError as error:
        raise DumpFailed(
            f"the tenant keyring cannot wrap the backup's data key ({error.reason}): "
            f"{error.message}"
        ) from None

    with span("backup snapshot"):
        snapshot = _open_snapshot(source)
    try:
        args = [
            os.fspath(pg_dump),
            "--format=custom",
            "--no-password",
            f"--snapshot={snapshot.snapshot_id}",
        ]
        if lock_wait_timeout_seconds is not None:
            args.append(f"--lock-wait-timeout={int(lock_wait_timeout_seconds * 1000)}")
        with libpq_environment(source) as env:
            scan = _StatsScan(snapshot, checksums=checksums, where=source.where)
            try:
                # pg_dump -> encrypt -> upload, streamed: one step, as the data flows.
                with span("backup dump, encrypt, upload"):
                    dumped = _stream_dump(
                        args,
                        env=env,
                        storage=storage,
                        archive=archive,
                        key=stream_key.key,
                        key_id=stream_key.key_id,
                        chunk_size=chunk_size,
                        scan=scan,
                        source=source,
                        size_hint=snapshot.database_size,
                    )
            finally:
                scan.stop()
    finally:
        with contextlib.suppress(psycopg.Error):
            snapshot.conn.close()

    tables, plaintext_size, plaintext_sha256, archive_size, archive_sha256 = dumped
    unsigned = Manifest(
        backup_id=backup_id,
        tenant=tenant,
        database=source.dbname,
        archive=archive,
        start_time=start,
        end_time=start + timedelta(seconds=time.monotonic() - started),
        plaintext_size=plaintext_size,
        archive_size=archive_size,
        plaintext_sha256=plaintext_sha256,
        archive_sha256=archive_sha256,
        key_id=stream_key.key_id,
        wrapped_key="-",
        chunk_size=chunk_size,
        server_version=snapshot.server_version,
        server_version_num=snapshot.server_version_num,
        pg_dump_version=dump_version,
        checksum_algorithm=CHECKSUM_ALGORITHM if checksums else None,
        tables=tables,
        made_by=made_by,
    )
    try:
        with span("backup manifest"):
            manifest = dataclasses.replace(
                unsigned,
                wrapped_key=keyring.wrap(stream_key.key, context=unsigned.key_context()),
            )
            storage.put_bytes(manifest_name(backup_id), manifest.to_json())
    except (BackupError, CryptoError) as error:
        # Without its manifest the archive is not a backup; remove it now rather than
        # leave it to pruning.
        with contextlib.suppress(BackupError):
            storage.delete(archive)
        if isinstance(error, CryptoError):
            raise DumpFailed(f"wrapping the backup's data key failed: {error.message}") from None
        raise
    return BackupResult(
        backup_id=backup_id,
        tenant=tenant,
        database=source.dbname,
        storage=storage.description,
        archive=archive,
        manifest_object=manifest_name(backup_id),
        start_time=start,
        end_time=manifest.end_time,
        duration_seconds=time.monotonic() - started,
        manifest=manifest,
    )


def _stream_dump(
    args: list[str],
    *,
    env: dict[str, str],
    storage: Storage,
    archive: str,
    key: bytes,
    key_id: str,
    chunk_size: int,
    scan: _StatsScan,
    source: ConnectionInfo,
    size_hint: int | None = None,
) -> tuple[dict[str, TableStats], int, str, int, str]:
    """Run pg_dump into an encrypted archive; returns (tables, sizes and digests)."""
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
    except OSError as error:
        raise DumpFailed(f"cannot start pg_dump ({args[0]}): {error.strerror}") from None
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = StderrTail(process.stderr, secrets=[source.password])
    _enlarge_pipe(process.stdout)
    # bufsize=0: stdout is the raw pipe, which reads into a buffer without copies.
    stdout = cast(io.RawIOBase, process.stdout)
    plaintext_sha256 = hashlib.sha256()
    buffer = bytearray(COPY_BUFFER_SIZE)
    view = memoryview(buffer)
    try:
        with storage.writer(archive, size_hint=size_hint) as out:
            hashing = _HashingWriter(out)
            # EncryptingWriter only calls write(); _HashingWriter is that much of a BinaryIO.
            encrypting = EncryptingWriter(
                cast(BinaryIO, hashing), key, key_id=key_id, chunk_size=chunk_size
            )
            while count := stdout.readinto(buffer):
                piece = view[:count]
                plaintext_sha256.update(piece)
                encrypting.write(piece)
            returncode = process.wait()
            stderr.join()
            if returncode != 0:
                raise DumpFailed(
                    f"pg_dump of {source.where} failed ({describe_exit(returncode)}): "
                    f"{stderr.text()}"
                )
            tables = scan.wait()
            # Only now, with the dump and the statistics complete, is the stream finished:
            # an archive of a failed dump never gets its final chunk.
            encrypting.close()
        return (
            tables,
            encrypting.plaintext_size,
            plaintext_sha256.hexdigest(),
            hashing.size,
            hashing.sha256.hexdigest(),
        )
    except StorageError:
        raise
    except OSError as error:
        raise DumpFailed(
            f"reading pg_dump's output failed: {error.strerror or type(error).__name__}"
        ) from None
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        stdout.close()
        stderr.join()
        process.stderr.close()
