"""A tenant admin's credentials Secret and endpoint cannot turn the operator's reads around.

Tenant admins write the Secrets of their namespace, among them a CleoBackup's credentials
Secret, and choose the store's endpoint. The operator (verification, drills) and the
runner build their stores from them with obstore. Here local listeners stand in for the
places a request must never go (an endpoint a GCS key names, the operator's token
authority, the node's metadata service) and for a slow store; each records what reaches
it. No cloud is involved: the stores' endpoints are loopback listeners too.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.object_store import ObjectStoreStorage, ReadLimits
from cleo_operator.backup.object_stores import (
    CredentialsUnavailable,
    gcs_storage,
    object_storage_from_url,
    operator_storage,
)
from cleo_operator.render.backup_identity import AUTH_ENV
from tests.unit.render.test_backup_identity import azure, gcs, s3

pytestmark = pytest.mark.security

SAS = "sv=2024-01-01&ss=b&sig=tenant-signature"
OPERATOR_TOKEN = "operator-session-token-0000"


@dataclass
class Listener:
    """A loopback HTTP server that records requests and answers as told."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


def _serve(*, status: int = 403, trickle: float | None = None) -> Iterator[Listener]:
    listener = Listener(url="")
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _answer(self) -> None:
            listener.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers)}
            )
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if trickle is None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            size = 1 << 20
            wanted = self.headers.get("Range")
            if wanted:
                first, _, last = wanted.removeprefix("bytes=").partition("-")
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.send_header("Content-Length", str(int(last) - int(first) + 1))
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(size))
            self.send_header("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT")
            self.send_header("ETag", '"slow"')
            self.end_headers()
            if self.command == "HEAD":
                return
            # One byte at a time: never a stall long enough for a read timeout. The
            # server gives up after a while so that a failing test ends.
            ends = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < ends:
                try:
                    self.wfile.write(b"<")
                    self.wfile.flush()
                except OSError:
                    return
                stop.wait(trickle)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    listener.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def store() -> Iterator[Listener]:
    """The store the CleoBackup names (it refuses everything)."""
    yield from _serve()


@pytest.fixture
def elsewhere() -> Iterator[Listener]:
    """Where nothing may arrive: a key's endpoint, a token authority, the metadata service."""
    yield from _serve(status=200)


@pytest.fixture
def slow() -> Iterator[Listener]:
    """A store that answers every GET one byte at a time."""
    yield from _serve(trickle=0.2)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(data: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "k", "namespace": "cleo-acme"},
        "data": {k: b64(v) for k, v in data.items()},
    }


def service_account_key() -> dict[str, Any]:
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return {
        "type": "service_account",
        "project_id": "acme",
        "private_key_id": "0011",
        "private_key": pem,
        "client_email": "backup@acme.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.mark.parametrize(
    ("change", "field_named"),
    [
        ({"gcs_base_url": "{url}", "disable_oauth": True}, "gcs_base_url"),
        ({"disable_oauth": True}, "disable_oauth"),
        ({"token_uri": "{url}/token"}, "token_uri"),
        ({"type": "authorized_user"}, "type"),
        ({"storage_endpoint": "{url}"}, "storage_endpoint"),
    ],
)
def test_a_gcs_key_cannot_choose_the_endpoint(
    elsewhere: Listener, change: dict[str, Any], field_named: str
) -> None:
    key = service_account_key()
    key.update(
        {k: v.format(url=elsewhere.url) if isinstance(v, str) else v for k, v in change.items()}
    )
    text = json.dumps(key)
    spec = parse_backup_spec(gcs(credentialsSecret="k"))  # no endpoint: Google's

    with pytest.raises(CredentialsUnavailable) as caught:
        operator_storage(spec, secret({"service-account.json": text}), environ={})
    assert caught.value.reason == "CredentialsInvalid"
    assert field_named in str(caught.value)
    assert elsewhere.url not in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)
    # The runner refuses the same key.
    with pytest.raises(ValueError, match=field_named) as refused:
        gcs_storage(bucket="b", environ={AUTH_ENV: "secret", "GOOGLE_SERVICE_ACCOUNT_KEY": text})
    assert elsewhere.url not in str(refused.value)
    assert elsewhere.requests == []


def test_a_gcs_store_always_names_its_base_url() -> None:
    key = json.dumps(service_account_key())
    storage = gcs_storage(bucket="b", environ={"GOOGLE_SERVICE_ACCOUNT_KEY": key})
    assert storage.store.config["base_url"] == "https://storage.googleapis.com"


def test_operator_storage_ignores_the_operators_own_cloud_environment(
    store: Listener, elsewhere: Listener, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The operator's pod as Azure's and EKS's webhooks would set it up for an identity of
    # its own; the authority and STS stand-ins must receive nothing.
    token_file = tmp_path / "token"
    token_file.write_text("operator-federated-token")
    for name, value in {
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000002",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_AUTHORITY_HOST": elsewhere.url,
        "AZURE_STORAGE_ACCOUNT_KEY": b64("operator-account-key"),
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/operator",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ENDPOINT_URL_STS": elsewhere.url,
        "AWS_SESSION_TOKEN": OPERATOR_TOKEN,
        "AWS_METADATA_ENDPOINT": elsewhere.url,
        "AZURE_MSI_ENDPOINT": elsewhere.url,
    }.items():
        monkeypatch.setenv(name, value)
    limits = ReadLimits(base_seconds=5)
    azure_spec = parse_backup_spec(
        azure(credentialsSecret="k", endpoint=f"{store.url}/cleobackups", egress=["127.0.0.1/32"])
    )
    s3_spec = parse_backup_spec(s3(credentialsSecret="k", endpoint=store.url))
    stores = [
        operator_storage(
            azure_spec,
            secret({"AZURE_STORAGE_SAS_TOKEN": SAS}),
            environ=os.environ,
            limits=limits,
        ),
        operator_storage(
            s3_spec,
            secret({"AWS_ACCESS_KEY_ID": "AKIDTENANT", "AWS_SECRET_ACCESS_KEY": "tenant"}),
            environ=os.environ,
            limits=limits,
        ),
    ]
    for storage in stores:
        with pytest.raises(StorageError, match="access refused"):
            storage.list()

    assert elsewhere.requests == []
    assert store.requests, "the stores were asked"
    for request in store.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert OPERATOR_TOKEN not in json.dumps(request)
        assert "operator" not in headers.get("authorization", "")
        if request["path"].startswith("/cleobackups"):
            assert "sig=tenant-signature" in request["path"]  # the tenant's SAS, nothing else
            assert "authorization" not in headers
        else:
            assert "Credential=AKIDTENANT/" in headers["authorization"]


@pytest.mark.parametrize(
    ("destination", "runner_env", "named"),
    [
        (
            "s3://b/p?region=eu-west-1&endpoint={store}",
            {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        ("s3://b/p?endpoint={store}", {"AWS_ACCESS_KEY_ID": "AKID"}, "AWS_SECRET_ACCESS_KEY"),
        (
            "azure://cleobackups/c/p?endpoint={store}/cleobackups",
            {"AZURE_STORAGE_SAS_TOKEN": ""},
            "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN",
        ),
        ("gs://b/p?endpoint={store}", {}, "GOOGLE_SERVICE_ACCOUNT_KEY"),
    ],
)
def test_a_secret_keyed_runner_never_falls_back_to_instance_metadata(
    store: Listener,
    elsewhere: Listener,
    monkeypatch: pytest.MonkeyPatch,
    *,
    destination: str,
    runner_env: dict[str, str],
    named: str,
) -> None:
    # The metadata services, as the node would offer them, are the `elsewhere` listener.
    for name in ("AWS_METADATA_ENDPOINT", "AZURE_MSI_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.setenv(name, elsewhere.url)
    environ = {AUTH_ENV: "secret", **runner_env}
    with pytest.raises(ValueError, match=named):
        object_storage_from_url(destination.format(store=store.url), environ=environ)
    assert elsewhere.requests == []
    assert store.requests == []


def test_a_secret_keyed_runner_with_keys_asks_only_its_store(
    store: Listener, elsewhere: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", elsewhere.url)
    storage = object_storage_from_url(
        f"s3://b/p?endpoint={store.url}",
        environ={AUTH_ENV: "secret", "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    assert storage is not None
    with pytest.raises(StorageError, match="access refused"):
        storage.stat("x.manifest.json")
    assert store.requests
    assert elsewhere.requests == []


LIMITS = ReadLimits(base_seconds=1.0, floor_bytes_per_second=1 << 20, range_size=1 << 20)
"""Each request bounded by 2 s; a listing by 1 s; a 1 MiB read by 2 s."""


def slow_storage(slow: Listener) -> ObjectStoreStorage:
    """The slow store as the operator reads it, within `LIMITS`."""
    return operator_storage(
        parse_backup_spec(s3(credentialsSecret="k", endpoint=slow.url)),
        secret({"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "s"}),
        environ={},
        limits=LIMITS,
    )


def test_a_slow_store_cannot_hold_a_listing_past_its_deadline(slow: Listener) -> None:
    storage = slow_storage(slow)
    started = time.monotonic()
    with pytest.raises(StorageError):
        storage.list()
    assert time.monotonic() - started < 10


def test_a_slow_store_cannot_hold_a_read_past_its_deadline(slow: Listener) -> None:
    storage = slow_storage(slow)
    started = time.monotonic()
    with pytest.raises(StorageError), storage.open("b1.archive") as reader:
        reader.read()
    assert time.monotonic() - started < 10
    ranged = [r for r in slow.requests if r["method"] == "GET"]
    assert ranged
    assert all("range" in {k.lower() for k in r["headers"]} for r in ranged)
