"""A local Google Cloud Storage (fake-gcs-server, built by the e2e toolchain), in memory.

fake-gcs-server is a Go program, built like the control plane (``e2e/toolchain/
fake-gcs-server``: pinned module, cached outside the repository) and run per test module
on a free loopback port. Version 1.56.1 implements the XML API's reads, lists and deletes
but not its writes (a plain ``PUT /bucket/object``, conditional or not, and multipart
uploads), which is how obstore writes to GCS; the component's ``main.go`` adds those few
handlers in front of it (parts held until the upload completes, ``x-goog-if-generation-
match: 0`` honoured) and answers how many uploads are open. It accepts any credential (no
signature is checked), so a wrong key cannot be refused by it: the suite shows instead
that a key obstore cannot read is refused without its text.

The service account key the runner gets is real in form (an RSA key made here): obstore
signs its requests with it, exactly as against Google.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.object_stores import gcs_storage
from e2e.cluster import build_toolchain
from tests.harness.postgres import free_loopback_port
from tests.integration.emulator_support import answers, running

BUCKET = "cleo-tests"


def service_account_key(project: str = "cleo-tests") -> str:
    """A service account JSON key with a fresh RSA key (what a credentials Secret holds)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": os.urandom(8).hex(),
            "private_key": pem,
            "client_email": f"backup@{project}.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@dataclass(frozen=True)
class GcsServer:
    endpoint: str
    key: str = field(repr=False)

    def environ(self) -> dict[str, str]:
        """The runner's variables for the service account key."""
        return {"GOOGLE_SERVICE_ACCOUNT_KEY": self.key}

    def fresh_prefix(self, name: str) -> str:
        return f"{name}-{os.urandom(4).hex()}"

    def storage(self, prefix: str) -> ObjectStoreStorage:
        """The test bucket under `prefix`."""
        return gcs_storage(
            bucket=BUCKET, prefix=prefix, endpoint=self.endpoint, environ=self.environ()
        )

    def unfinished_uploads(self) -> int:
        """How many multipart uploads the server holds open."""
        with urllib.request.urlopen(self.endpoint + "/_bridge/unfinished", timeout=10) as r:  # noqa: S310
            return int(r.read())

    def upload(self, prefix: str, name: str, data: bytes) -> None:
        """Put an object through fake-gcs-server's JSON upload API (see the module docstring)."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": f"{prefix}/{name}"})
        request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL
            f"{self.endpoint}/upload/storage/v1/b/{BUCKET}/o?{query}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - loopback
            pass


def fake_gcs_server_bin() -> Path:
    binary = build_toolchain() / "fake-gcs-server"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run e2e/toolchain/build.sh")
    return binary


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    port = free_loopback_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [str(fake_gcs_server_bin()), "-host", "127.0.0.1", "-port", str(port)]

    def ping() -> None:
        with urllib.request.urlopen(endpoint + "/storage/v1/b", timeout=2):  # noqa: S310
            pass

    log = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs-server.log"
    with running(argv, log=log, ready=answers(ping), what="fake-gcs-server"):
        request = urllib.request.Request(  # noqa: S310 - loopback
            endpoint + "/storage/v1/b",
            data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
            pass
        yield GcsServer(endpoint, service_account_key())
