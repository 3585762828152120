"""The Storage contract on every object store, against emulators the tests start.

One suite, parametrised by backend: S3 (moto's server, checking every signature), Azure
Blob (Azurite, checking Shared Key signatures) and Google Cloud Storage (fake-gcs-server
with the XML API writes it lacks added by the toolchain component, and no credential
check: see `gcs_support`). Each server is module-scoped, on a free loopback port, started
on first use and stopped at the end; each test writes under a prefix of its own.

What is shown: atomic writes (small objects in one conditional PUT, large ones in a
multipart upload of parts sized from the hint), no overwrite, listing, reading back,
deleting, a failed write leaving nothing (S3, GCS: not even an unfinished upload), a wrong
credential refused with the storage's words and no secret, and a whole backup, restore,
verification and retention prune on each store.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import obstore
import psycopg
import pytest

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.object_stores import gcs_storage, s3_storage
from cleo_operator.backup.restore import restore_archive, verify_backup
from cleo_operator.backup.retention import RetentionPolicy, prune
from cleo_operator.backup.runner import run_backup
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer
from tests.integration import azurite_support, gcs_support, s3_support
from tests.integration.backup_support import (
    create_database,
    create_sample_database,
    drop_database,
    table_contents,
)

s3_server = s3_support.s3_server
azurite_server = azurite_support.azurite_server
gcs_server = gcs_support.gcs_server

MiB = 1 << 20


@dataclass
class Backend:
    """One store under a fresh prefix, and what the suite needs to know about its server."""

    name: str
    storage: ObjectStoreStorage
    seed: Callable[[str, bytes], None]
    """Put an object by name (through obstore, or the emulator's own API for GCS)."""
    wrong_credentials: Callable[[], ObjectStoreStorage]
    """The same store with a wrong credential (GCS: an unreadable key, as fake-gcs-server
    checks none; obstore refuses it before any request)."""
    secret: str
    """The (wrong) credential, which no message may show."""
    unfinished_uploads: Callable[[], int] | None
    """How many multipart uploads the server holds unfinished, where it can tell."""
    refusal: str = ""
    """The store's error code for a wrong credential (its signature check failing)."""


@pytest.fixture(params=["s3", "azure", "gcs"])
def backend(request: pytest.FixtureRequest) -> Backend:
    name = request.param
    if name == "s3":
        s3: s3_support.S3Server = request.getfixturevalue("s3_server")
        storage = s3.fresh_storage(prefix="contract")
        prefix = storage.store.prefix or ""
        return Backend(
            name=name,
            storage=storage,
            seed=storage.put_bytes,
            wrong_credentials=lambda: s3_storage(
                bucket=s3.bucket,
                prefix=prefix,
                endpoint=s3.endpoint,
                environ={
                    "AWS_ACCESS_KEY_ID": s3.credentials.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": "not-the-" + "secret" * 5,
                },
            ),
            secret="not-the-" + "secret" * 5,
            unfinished_uploads=s3.unfinished_uploads,
            refusal="HTTP 403 SignatureDoesNotMatch",
        )
    if name == "azure":
        azure: azurite_support.AzuriteServer = request.getfixturevalue("azurite_server")
        storage = azure.fresh_storage(prefix="contract")
        wrong_key = base64.b64encode(b"not-the-key" * 6).decode()
        return Backend(
            name=name,
            storage=storage,
            seed=storage.put_bytes,
            wrong_credentials=lambda: azure.fresh_storage(prefix="contract", key=wrong_key),
            secret=wrong_key,
            unfinished_uploads=None,
            refusal="HTTP 403 AuthorizationFailure",
        )
    gcs: gcs_support.GcsServer = request.getfixturevalue("gcs_server")
    prefix = gcs.fresh_prefix("contract")
    unreadable = json.loads(gcs.key)
    unreadable["private_key"] = unreadable["private_key"].replace("\n", "\nSECRETPART", 1)
    bad_key = json.dumps(unreadable)
    return Backend(
        name=name,
        storage=gcs.storage(prefix),
        seed=lambda n, data: gcs.upload(prefix, n, data),
        wrong_credentials=lambda: gcs_storage(
            bucket=gcs_support.BUCKET,
            prefix=prefix,
            endpoint=gcs.endpoint,
            environ={"GOOGLE_SERVICE_ACCOUNT_KEY": bad_key},
        ),
        secret="SECRETPART",
        unfinished_uploads=gcs.unfinished_uploads,
    )


def test_objects_are_listed_read_back_and_deleted(backend: Backend) -> None:
    storage = backend.storage
    small = b'{"a": "manifest"}'
    large = os.urandom(12 * MiB)
    backend.seed("small.manifest.json", small)
    backend.seed("large.archive", large)
    backend.seed("extra.json", b"x")
    assert [(o.name, o.size) for o in storage.list()] == [
        ("extra.json", 1),
        ("large.archive", len(large)),
        ("small.manifest.json", len(small)),
    ]
    info = storage.stat("large.archive")
    assert info is not None
    assert info.modified.tzinfo is not None
    assert abs(info.modified - datetime.now(UTC)) < timedelta(minutes=5)
    with storage.open("large.archive") as reader:
        chunks = []
        while piece := reader.read(MiB):
            chunks.append(piece)
    assert b"".join(chunks) == large
    assert storage.read_bytes("small.manifest.json", limit=100) == small
    with pytest.raises(StorageError, match="larger than 10 bytes"):
        storage.read_bytes("small.manifest.json", limit=10)
    assert storage.delete("large.archive") is True
    assert storage.delete("large.archive") is False
    assert storage.stat("large.archive") is None
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes("large.archive", limit=10)


def test_writes_are_atomic_multipart_and_never_overwrite(backend: Backend) -> None:
    storage = backend.storage
    large = os.urandom(12 * MiB)
    # The hint gives S3's smallest parts (5 MiB): three parts, uploaded concurrently.
    assert storage.plan(len(large)).part_size == 5 * MiB
    with storage.writer("large.archive", size_hint=len(large)) as out:
        for start in range(0, len(large), 3 * MiB):
            out.write(large[start : start + 3 * MiB])
            assert storage.stat("large.archive") is None  # invisible until complete
    assert storage.read_bytes("large.archive", limit=len(large)) == large
    storage.put_bytes("small.manifest.json", b"first")
    with pytest.raises(StorageError, match="already exists") as caught:
        storage.put_bytes("small.manifest.json", b"second")
    assert "never overwritten" in caught.value.message
    with pytest.raises(StorageError, match="already exists"):
        storage.put("large.archive", io.BytesIO(b"other"))
    # The store itself enforces it (a writer racing past the HEAD check): the conditional PUT.
    with pytest.raises(Exception) as raced:  # noqa: PT011 - obstore's class, mapped below
        obstore.put(storage.store, "small.manifest.json", b"raced", mode="create")
    assert "already exists" in storage.error(raced.value, doing="writing").message
    assert storage.read_bytes("small.manifest.json", limit=100) == b"first"
    assert storage.read_bytes("large.archive", limit=len(large)) == large


def test_a_failed_write_leaves_nothing(backend: Backend) -> None:
    storage = backend.storage

    def dump_that_dies() -> None:
        with storage.writer("x.archive", size_hint=1) as out:
            out.write(os.urandom(11 * MiB))  # two 5 MiB parts on their way
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        dump_that_dies()
    assert storage.list() == []
    assert storage.stat("x.archive") is None
    if backend.unfinished_uploads is not None:
        # The multipart upload was aborted, not left to cost storage.
        assert backend.unfinished_uploads() == 0
    # Unfinished uploads of killed runs are the lifecycle rule's: nothing to do here.
    assert storage.clean_incomplete(older_than=datetime.now(UTC) + timedelta(hours=1)) == 0


@pytest.mark.security
def test_a_wrong_credential_is_refused_without_showing_it(backend: Backend) -> None:
    if backend.name == "gcs":
        with pytest.raises(ValueError, match="credentials or settings are invalid") as refused:
            backend.wrong_credentials()
        assert backend.secret not in str(refused.value)
        assert refused.value.__cause__ is None
        assert refused.value.__suppress_context__
        return
    bad = backend.wrong_credentials()
    assert backend.secret not in repr(bad)
    attempts: list[tuple[str, Callable[[], object]]] = [
        ("list", bad.list),
        ("put", lambda: bad.put_bytes("x.json", b"x")),
        ("stat", lambda: bad.stat("x")),
    ]
    for what, attempt in attempts:
        with pytest.raises(StorageError, match="access refused") as caught:
            attempt()
        error = caught.value
        assert error.reason == "StorageError"
        assert "check the credentials" in error.message
        if what == "list":  # a HEAD (stat, and the check before a put) has no body to quote
            assert backend.refusal in error.message, error.message
        assert backend.secret not in error.message
        # obstore's own error (URL, headers, body) is not chained into tracebacks.
        assert error.__cause__ is None
        assert error.__suppress_context__


@pytest.mark.postgres
def test_backup_restore_verify_and_prune(backend: Backend, postgres_server: PostgresServer) -> None:
    storage = backend.storage
    source, target = f"bk_src_{secrets.token_hex(4)}", f"bk_dst_{secrets.token_hex(4)}"
    create_database(postgres_server, source)
    create_database(postgres_server, target)
    try:
        create_sample_database(postgres_server, source, people=200, memories=400)
        with psycopg.connect(postgres_server.dsn(source), autocommit=True) as conn:
            conn.execute("CREATE TABLE attachments (id int, data bytea)")
            with conn.cursor().copy("COPY attachments FROM STDIN") as copy:
                for i in range(7):  # incompressible: more than one part
                    copy.write_row((i, os.urandom(MiB)))
        keyring = Keyring.generate(datetime.now(UTC))
        login = ConnectionInfo.from_dsn(postgres_server.dsn(source))
        first = run_backup(
            source=login,
            tenant="acme",
            storage=storage,
            keyring=keyring,
            now=datetime.now(UTC) - timedelta(days=2),
        )
        second = run_backup(source=login, tenant="acme", storage=storage, keyring=keyring)
        assert second.archive_size > 5 * MiB
        restore_archive(
            allow_privileged_target=True,  # restored as the test's superuser: its own archive
            storage=storage,
            backup_id=second.backup_id,
            keyring=keyring,
            target=ConnectionInfo.from_dsn(postgres_server.dsn(target)),
        )
        assert table_contents(postgres_server, target) == table_contents(postgres_server, source)
        verdict = verify_backup(
            storage=storage,
            backup_id=second.backup_id,
            keyring=keyring,
            admin=ConnectionInfo.from_dsn(postgres_server.dsn()),
        )
        assert verdict.passed, verdict.message
        result = prune(storage, tenant="acme", policy=RetentionPolicy(keep_last=1), keyring=keyring)
        assert result.deleted == (first.backup_id,)
        assert sorted(o.name for o in storage.list()) == sorted(
            [second.archive, second.manifest_object, f"{second.backup_id}.verification.json"]
        )
    finally:
        drop_database(postgres_server, source)
        drop_database(postgres_server, target)
