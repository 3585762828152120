"""A local Azure Blob service (Azurite, from npm) that checks every request's signature.

Azurite is Microsoft's emulator; it verifies Shared Key signatures with the account key, so a
wrong key is refused as Azure refuses it. It is a Node program: installed once with
``npm install --prefix`` into a cache folder keyed by its version (never into the repository)
and run per test module on a free loopback port, in memory. The account is Azurite's
built-in development account (its documented, public key). Containers are created with one
Shared Key request here (obstore, like the runner, never creates containers); a module uses
the server with ``azurite_server = azurite_support.azurite_server``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.object_stores import azure_storage
from tests.harness.postgres import free_loopback_port
from tests.integration.emulator_support import answers, running

AZURITE = "azurite@3.37.0"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (published in its README): not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CONTAINER = "cleo-tests"
API_VERSION = "2021-08-06"


def azurite_bin() -> Path:
    """``azurite-blob``, installed once into a cache folder (not the repository)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "cleo-operator-tests" / AZURITE.replace("@", "-")
    binary = folder / "node_modules" / ".bin" / "azurite-blob"
    done = folder / ".installed"
    if not done.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not installed: the Azure Blob tests need Node and npm")
        subprocess.run(
            [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", AZURITE],
            check=True,
            timeout=600,
            capture_output=True,
        )
        done.write_text(AZURITE + "\n")
    return binary


@dataclass(frozen=True)
class AzuriteServer:
    port: int

    @property
    def endpoint(self) -> str:
        """The blob service URL of the account (path style, as emulators use)."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def environ(self, key: str = ACCOUNT_KEY) -> dict[str, str]:
        """The runner's variables for an account key."""
        return {"AZURE_STORAGE_ACCOUNT_KEY": key}

    def fresh_storage(self, *, prefix: str, key: str = ACCOUNT_KEY) -> ObjectStoreStorage:
        """The test container under a new, empty prefix."""
        return azure_storage(
            account=ACCOUNT,
            container=CONTAINER,
            prefix=f"{prefix}-{os.urandom(4).hex()}",
            endpoint=self.endpoint,
            environ=self.environ(key),
        )

    def create_container(self, name: str) -> None:
        """Create a container with one Shared Key request."""
        date = email.utils.formatdate(usegmt=True)
        path = f"/{ACCOUNT}/{name}"
        # Shared Key's string to sign: the verb, eleven standard headers (Content-Type
        # among them), the x-ms- headers, then the resource (path-style: the account twice).
        string_to_sign = "\n".join(
            [
                "PUT",
                *([""] * 4),
                "application/octet-stream",
                *([""] * 6),
                f"x-ms-date:{date}\nx-ms-version:{API_VERSION}",
                f"/{ACCOUNT}{path}\nrestype:container",
            ]
        )
        signature = base64.b64encode(
            hmac.new(
                base64.b64decode(ACCOUNT_KEY), string_to_sign.encode(), hashlib.sha256
            ).digest()
        ).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}?restype=container",
            method="PUT",
            data=b"",
            headers={
                "Content-Type": "application/octet-stream",
                "x-ms-date": date,
                "x-ms-version": API_VERSION,
                "Authorization": f"SharedKey {ACCOUNT}:{signature}",
            },
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
            pass


@pytest.fixture(scope="module")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    port = free_loopback_port()
    argv = [
        str(azurite_bin()),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--silent",
    ]
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    ready = answers(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close())
    with running(argv, log=log, ready=ready, what="Azurite"):
        server = AzuriteServer(port)
        server.create_container(CONTAINER)
        yield server
