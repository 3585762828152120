"""A drill's search for backups: one CleoBackup with an incomplete Secret hides no other.

Against the in-memory API server (`FakeKube`); the readable CleoBackup's store is a loopback
listener that answers S3 listings with an empty bucket, so no emulator is needed.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cleo_operator.crypto import Keyring
from cleo_operator.failover.drill import ClusterBackupSource
from cleo_operator.failover.errors import FailoverError
from tests.harness.fake_kube import FakeKube

NS = "cleo-acme"
EMPTY_LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>'
    b"<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
    b"</ListBucketResult>"
)


@pytest.fixture
def empty_bucket() -> Iterator[str]:
    """An S3 endpoint whose every listing is empty."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(EMPTY_LISTING)))
            self.end_headers()
            self.wfile.write(EMPTY_LISTING)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def backup(name: str, endpoint: str, credentials: str) -> dict[str, Any]:
    return {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "tenant": "acme",
            "schedule": "0 3 * * *",
            "destination": {
                "type": "s3",
                "s3": {
                    "bucket": "cleo-backups",
                    "prefix": name,
                    "endpoint": endpoint,
                    "credentialsSecret": credentials,
                },
            },
        },
    }


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube.apply(secret("cleo-keyring", Keyring.generate(datetime.now(UTC)).to_secret_data()))
    kube.apply(secret("half", {"AWS_ACCESS_KEY_ID": b"AKID"}))
    kube.apply(secret("whole", {"AWS_ACCESS_KEY_ID": b"AK", "AWS_SECRET_ACCESS_KEY": b"s"}))
    return kube


def test_an_incomplete_secret_does_not_stop_the_search(kube: FakeKube, empty_bucket: str) -> None:
    kube.create(backup("broken", empty_bucket, "half"))
    kube.create(backup("nightly", empty_bucket, "whole"))

    with pytest.raises(FailoverError) as caught:
        ClusterBackupSource(kube).latest_verified(tenant="acme", namespace=NS)

    # The readable CleoBackup was searched (it has no verified backup); the broken one is
    # named among the problems, its Secret's values never.
    assert caught.value.reason == "NoVerifiedBackup", str(caught.value)
    assert "CleoBackup broken" in str(caught.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert "AKID" not in str(caught.value)


def test_only_incomplete_secrets_fail_the_drill_and_say_which(
    kube: FakeKube, empty_bucket: str
) -> None:
    kube.create(backup("broken", empty_bucket, "half"))

    with pytest.raises(FailoverError) as caught:
        ClusterBackupSource(kube).latest_verified(tenant="acme", namespace=NS)

    assert caught.value.reason == "BackupCredentialsMissing"
    assert "CleoBackup broken" in str(caught.value)
