"""A TCP proxy of the tests' own, to cut a process off from the API server on demand.

The operator under test talks to the API server through it (its kubeconfig names the
proxy's port; TLS passes through untouched, the server's certificate names 127.0.0.1). A
test calls `blackhole()`: from then on every byte either way is read and dropped, and new
connections are accepted and never answered, so requests hang as behind a dead network
link (not refused: a refusal would be noticed at once, which is the easy case). Test
tooling, not a mock: the API server and the operator are the real ones.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; a context manager that closes everything."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._blackholed = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def blackhole(self) -> None:
        """Drop everything from now on, in both directions, without closing anything."""
        self._blackholed.set()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            if self._blackholed.is_set():
                # Accepted, never answered: the client's TLS handshake waits forever.
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            upstream.settimeout(None)
            self._keep(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._blackholed.is_set():
                    continue  # read and dropped: the other side hears nothing
                dst.sendall(data)
        except OSError:
            pass
        if not self._blackholed.is_set():
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
