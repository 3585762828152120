"""`KubeError`: an API request failed (re-exported by `kube.client`, which raises it).

Why a module of its own: what only needs to recognise the error (the command line's common
ending, which every command imports) must not import the Kubernetes client to do so; that
import alone costs a tenth of a CPU-second per process.
"""

from __future__ import annotations

from typing import Final

from cleo_operator.core.errors import CleoError

__all__ = ["KubeError"]


_SCHEMA_MISMATCH: Final = "failed to create typed patch object"
"""Server-side apply's words (as a 500) when the object names a field the server lacks."""


class KubeError(CleoError):
    """An API request failed. `reason` is the API server's (NotFound, Conflict, Forbidden...).

    `message` is the server's own message; `str()` says which request it answered.
    """

    def __init__(self, *, status: int, reason: str, message: str, what: str) -> None:
        super().__init__(message)
        self.args = (f"{what}: {status} {reason}: {message}",)
        self.status = status
        self.reason = reason
        self.what = what
        self.retryable = self.transient

    def __str__(self) -> str:
        return f"{self.what}: {self.status} {self.reason}: {self.message}"

    @property
    def transient(self) -> bool:
        """Whether the same request may succeed later: a conflict, throttling, a server
        error, or no answer at all (status 0). Not server-side apply's 500 for a field the
        server's schema does not declare (an older server): that one never heals."""
        if self.status == 500 and _SCHEMA_MISMATCH in self.message:
            return False
        return self.status in (0, 409, 429) or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def invalid(self) -> bool:
        return self.status == 422
