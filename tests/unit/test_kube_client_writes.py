"""How long a write of the reconcilers' client may take, and that urllib3 never resends one
(kube/client.py; review finding 3), with the real client against a socket that never
answers (an API server behind a dead link, or one that took the request and stalls).

A write is checked against the write fence once, before it is sent: a resend by urllib3
after a read timeout went out again unchecked, with a fresh timeout, and the first one's
timeout (30 s) did not end when the fence closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes.config import kube_config

from cleo_operator.kube.client import KubeClient, KubeError, ReadRetry
from cleo_operator.kube.fence import NOT_LEADER, WriteFence, boottime


class Silent:
    """Accepts connections, reads what comes, records each request's method, answers
    nothing until closed."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.methods: list[str] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            first = connection.recv(65536)
            with self._lock:
                self.methods.append(first.split(b" ", 1)[0].decode())
            while connection.recv(65536):
                pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for connection in self._sockets:
                with contextlib.suppress(OSError):
                    connection.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def kube(silent: Silent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubeClient:
    """The reconcilers' client as `cleo-operator run` makes it (cli/run.py), pointed at
    `silent`."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{silent.port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    # Read from $KUBECONFIG when the module is imported, so set where it is kept.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return KubeClient.from_environment(pool_size=4, resend_writes=False)


def settle(silent: Silent, count: int) -> list[str]:
    deadline = time.monotonic() + 2
    while len(silent.methods) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # and nothing more comes
    return list(silent.methods)


@pytest.mark.security
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "POST"])
def test_a_write_that_got_no_answer_is_sent_once(
    kube: KubeClient, silent: Silent, method: str
) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - urllib3's timeout, whichever
        kube.request(method, "/api/v1/namespaces/x/configmaps/y", body={}, timeout=0.3)
    assert settle(silent, 1) == [method], "urllib3 resent a write"


def test_a_read_that_got_no_answer_is_still_resent(kube: KubeClient, silent: Silent) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011
        kube.request("GET", "/api/v1/namespaces/x", timeout=0.2)
    assert settle(silent, 4) == ["GET"] * 4


@pytest.mark.security
def test_a_fenced_write_ends_when_the_fence_closes(kube: KubeClient, silent: Silent) -> None:
    """A leader whose renews fail may start a write just before its fence closes: the write
    must not go on for its whole timeout (30 s) past the moment a standby may lead."""
    kube.fence = WriteFence()
    kube.fence.open_until(boottime() + 0.5)
    started = time.monotonic()
    with pytest.raises(Exception) as failed:  # noqa: PT011
        kube.request("PATCH", "/api/v1/namespaces/x", body={}, what="patch Namespace x")
    assert time.monotonic() - started < 1.5
    assert getattr(failed.value, "reason", None) != NOT_LEADER, "it was sent"
    assert settle(silent, 1) == ["PATCH"]
    with pytest.raises(KubeError) as refused:
        kube.request("PATCH", "/api/v1/namespaces/x", body={}, what="patch Namespace x")
    assert refused.value.reason == NOT_LEADER


def test_a_write_is_not_resent_after_a_connect_error_either() -> None:
    """urllib3 resends any method after a connect error (nothing was sent): for a write,
    the resend would still come after the fence's check, with a fresh timeout."""
    refused = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    retry = ReadRetry.reads(3)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        retry.increment("PUT", "/api/v1/namespaces/x", error=refused)
    assert retry.increment("GET", "/api/v1/namespaces/x", error=refused).total == 2
