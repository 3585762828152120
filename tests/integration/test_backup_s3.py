"""S3Storage against a local S3-compatible server that checks every request's signature.

The server is moto's (`moto[server]` from PyPI), a test-only boundary: it stands in for
AWS S3 or MinIO here, where no real object store can be reached. moto is run with request
authentication on, so it verifies each SigV4 signature with botocore's implementation and
rejects a wrong one; the IAM user and its key are created through moto's IAM API in the
first (unauthenticated) requests.

moto cannot live in the project's virtualenv: botocore pins python-dateutil below 3 and
the Kubernetes client needs 3 or later. So it is installed once, with pip, into a cache
folder of its own and run from there as a separate process.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.restore import restore_archive, verify_backup
from cleo_operator.backup.retention import RetentionPolicy, prune
from cleo_operator.backup.runner import run_backup
from cleo_operator.backup.s3 import S3Credentials, S3Storage, _Upload
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer, free_loopback_port
from tests.integration.backup_support import (
    create_database,
    create_sample_database,
    drop_database,
    table_contents,
)

MOTO = "moto[server]==5.2.5"


def moto_site() -> Path:
    """moto and its dependencies, installed once into a cache folder (not the venv)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "cleo-operator-tests" / "moto-5.2.5"
    done = folder / ".installed"
    if not done.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(folder),
                "--upgrade",
                MOTO,
            ],
            check=True,
            timeout=600,
        )
        done.write_text(MOTO + "\n")
    return folder


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    credentials: S3Credentials


def _iam(endpoint: str, params: dict[str, str]) -> str:
    data = urllib.parse.urlencode({**params, "Version": "2010-05-08"}).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL
        endpoint + "/",
        data=data,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            # moto routes by the service named in the credential scope.
            "Authorization": "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/"
            "aws4_request, SignedHeaders=host, Signature=none",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return str(response.read().decode())


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    site = moto_site()
    port = free_loopback_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(site),
        "HOME": str(log.parent),
        # The first three requests (the IAM setup below) go unauthenticated; every
        # request after them must carry a valid signature of a known key.
        "INITIAL_NO_AUTH_ACTION_COUNT": "3",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with contextlib.closing(
                    urllib.request.urlopen(endpoint + "/moto-api/", timeout=2)  # noqa: S310
                ):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        _iam(endpoint, {"Action": "CreateUser", "UserName": "backup"})
        created = _iam(endpoint, {"Action": "CreateAccessKey", "UserName": "backup"})
        key_id = re.search(r"<AccessKeyId>(.+?)</AccessKeyId>", created)
        secret = re.search(r"<SecretAccessKey>(.+?)</SecretAccessKey>", created)
        assert key_id, created
        assert secret, created
        policy = (
            '{"Version":"2012-10-17","Statement":'
            '[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
        )
        _iam(
            endpoint,
            {
                "Action": "PutUserPolicy",
                "UserName": "backup",
                "PolicyName": "backups",
                "PolicyDocument": policy,
            },
        )
        yield S3Server(endpoint, S3Credentials(key_id.group(1), secret.group(1)))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def storage(s3_server: S3Server) -> S3Storage:
    """A fresh bucket and prefix per test, with 5 MiB parts (S3's smallest)."""
    bucket = f"cleo-{secrets.token_hex(4)}"
    storage = S3Storage(
        bucket=bucket,
        prefix="tenants/acme",
        endpoint=s3_server.endpoint,
        credentials=s3_server.credentials,
        part_size=5 << 20,
    )
    storage.create_bucket()
    return storage


def test_objects_round_trip_small_and_multipart(storage: S3Storage) -> None:
    small = b"a manifest"
    large = os.urandom(12 << 20)  # three parts: 5 + 5 + 2 MiB
    storage.put_bytes("small.manifest.json", small)
    assert storage.put("large.archive", io.BytesIO(large)) == len(large)
    assert [(o.name, o.size) for o in storage.list()] == [
        ("large.archive", len(large)),
        ("small.manifest.json", len(small)),
    ]
    info = storage.stat("large.archive")
    assert info is not None
    assert abs(info.modified - datetime.now(UTC)) < timedelta(minutes=5)
    with storage.open("large.archive") as reader:
        chunks = []
        while piece := reader.read(1 << 20):
            chunks.append(piece)
    assert b"".join(chunks) == large
    assert storage.read_bytes("small.manifest.json", limit=100) == small
    with pytest.raises(StorageError, match="already exists"):
        storage.put_bytes("small.manifest.json", b"other")
    assert storage.delete("large.archive") is True
    assert storage.delete("large.archive") is False
    assert storage.stat("large.archive") is None
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes("large.archive", limit=10)


def test_a_failed_write_leaves_nothing(storage: S3Storage) -> None:
    def dump_that_dies() -> None:
        with storage.writer("x.archive") as out:
            out.write(os.urandom(11 << 20))  # two parts already uploaded
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        dump_that_dies()
    assert storage.list() == []
    # The multipart upload was aborted, not left to cost storage.
    assert storage.clean_incomplete(older_than=datetime.now(UTC) + timedelta(hours=1)) == 0


def test_uploads_of_crashed_runs_are_cleaned_up(storage: S3Storage) -> None:
    # A process killed mid-write never aborts its upload: simulate by never finishing it.
    crashed = _Upload(storage, key=f"{storage.prefix}/y.archive", name="y.archive")
    crashed.write(os.urandom(6 << 20))
    assert crashed.upload_id is not None
    storage.put_bytes("finished.archive", b"done")
    assert [o.name for o in storage.list()] == ["finished.archive"]
    # (moto reports a fixed initiation time for every upload, so the age rule itself is
    # tested on LocalStorage; here: unfinished uploads are found and aborted.)
    assert storage.clean_incomplete(older_than=datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert [o.name for o in storage.list()] == ["finished.archive"]
    assert storage.clean_incomplete(older_than=datetime.now(UTC) + timedelta(minutes=1)) == 0


def test_a_wrong_secret_is_rejected_and_not_shown(s3_server: S3Server, storage: S3Storage) -> None:
    wrong = S3Credentials(s3_server.credentials.access_key_id, "not-the-" + "secret" * 5)
    bad = S3Storage(
        bucket=storage.bucket, endpoint=s3_server.endpoint, credentials=wrong, prefix="x"
    )
    with pytest.raises(StorageError, match="SignatureDoesNotMatch") as caught:
        bad.list()
    assert "check the credentials Secret" in caught.value.message
    assert "secret" * 5 not in caught.value.message
    assert s3_server.credentials.secret_access_key not in caught.value.message


@pytest.mark.postgres
def test_backup_restore_verify_and_prune_on_s3(
    postgres_server: PostgresServer, storage: S3Storage
) -> None:
    source, target = f"bk_src_{secrets.token_hex(4)}", f"bk_dst_{secrets.token_hex(4)}"
    create_database(postgres_server, source)
    create_database(postgres_server, target)
    try:
        create_sample_database(postgres_server, source, people=500, memories=1000)
        with psycopg.connect(postgres_server.dsn(source), autocommit=True) as conn:
            conn.execute("CREATE TABLE attachments (id int, data bytea)")
            with conn.cursor().copy("COPY attachments FROM STDIN") as copy:
                for i in range(7):  # incompressible: the archive needs a multipart upload
                    copy.write_row((i, os.urandom(1 << 20)))
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
        assert second.archive_size > 5 << 20  # a multipart upload
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
