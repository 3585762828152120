"""A local S3-compatible server that checks every request's signature, for the S3 tests.

The server is moto's (`moto[server]` from PyPI), a test-only boundary: it stands in for
AWS S3 or MinIO here, where no real object store can be reached. moto is run with request
authentication on, so it verifies each SigV4 signature with botocore's implementation and
rejects a wrong one; the IAM user, its key and the one bucket of the tests are created in
the first (unauthenticated) requests (obstore, like the runner, never creates buckets), and
each test writes under a prefix of its own.

moto cannot live in the project's virtualenv: botocore pins python-dateutil below 3 and
the Kubernetes client needs 3 or later. So it is installed once, with pip, into a cache
folder of its own and run from there as a separate process. A test module uses the server
with ``s3_server = s3_support.s3_server`` (a module-scoped fixture).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.object_stores import s3_storage
from tests.harness.postgres import free_loopback_port
from tests.integration.emulator_support import answers, running

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


BUCKET = "cleo-tests"
"""The bucket every test of a module writes to, under a prefix of its own."""


@dataclass(frozen=True)
class S3Key:
    """The test user's access key (a throwaway key of the local server)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)

    def environ(self) -> dict[str, str]:
        """The runner's variables for this key."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    credentials: S3Key
    bucket: str = BUCKET

    def fresh_prefix(self, name: str) -> str:
        """A prefix no other test uses."""
        return f"{name}-{secrets.token_hex(4)}"

    def fresh_storage(
        self, *, prefix: str, environ: dict[str, str] | None = None
    ) -> ObjectStoreStorage:
        """The bucket under a new, empty prefix (`prefix` and a random part)."""
        return s3_storage(
            bucket=self.bucket,
            prefix=self.fresh_prefix(prefix),
            endpoint=self.endpoint,
            environ=self.credentials.environ() if environ is None else environ,
        )

    def unfinished_uploads(self) -> int:
        """How many multipart uploads the bucket holds unfinished, as AWS's own SDK lists
        them (boto3 from moto's folder, in a process of its own: see the module docstring)."""
        script = (
            "import boto3, sys\n"
            "s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',"
            " aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])\n"
            "print(len(s3.list_multipart_uploads(Bucket=sys.argv[4]).get('Uploads', [])))\n"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                self.endpoint,
                self.credentials.access_key_id,
                self.credentials.secret_access_key,
                self.bucket,
            ],
            env={"PYTHONPATH": str(moto_site()), "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return int(result.stdout.strip())


def _unsigned(endpoint: str, method: str, path: str, *, service: str) -> None:
    """A request of the setup: no signature, the credential scope names the service."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL
        endpoint + path,
        method=method,
        data=b"",
        headers={
            "Content-Type": "application/xml",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/{service}/"
            "aws4_request, SignedHeaders=host, Signature=none",
        },
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
        pass


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


ALLOW_S3 = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
)
"""The IAM policy of the test's user and role: everything on S3."""


@contextlib.contextmanager
def moto_server(folder: Path, *, unauthenticated: int) -> Iterator[str]:
    """moto's server on a free loopback port (its endpoint), the first `unauthenticated`
    requests free of signatures (for the setup), every later one checked."""
    port = free_loopback_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(moto_site()),
        "HOME": str(folder),
        "INITIAL_NO_AUTH_ACTION_COUNT": str(unauthenticated),
    }

    def ping() -> None:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):  # noqa: S310 - loopback
            pass

    with running(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        log=folder / "moto.log",
        ready=answers(ping),
        what="moto",
    ):
        yield endpoint


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    # The four requests of the setup go unauthenticated; every one after them must carry a
    # valid signature of a known key.
    with moto_server(tmp_path_factory.mktemp("moto"), unauthenticated=4) as endpoint:
        _iam(endpoint, {"Action": "CreateUser", "UserName": "backup"})
        created = _iam(endpoint, {"Action": "CreateAccessKey", "UserName": "backup"})
        key_id = re.search(r"<AccessKeyId>(.+?)</AccessKeyId>", created)
        secret = re.search(r"<SecretAccessKey>(.+?)</SecretAccessKey>", created)
        assert key_id, created
        assert secret, created
        _iam(
            endpoint,
            {
                "Action": "PutUserPolicy",
                "UserName": "backup",
                "PolicyName": "backups",
                "PolicyDocument": ALLOW_S3,
            },
        )
        _unsigned(endpoint, "PUT", f"/{BUCKET}", service="s3")
        yield S3Server(endpoint, S3Key(key_id.group(1), secret.group(1)))
