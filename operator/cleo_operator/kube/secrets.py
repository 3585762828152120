"""Secrets the operator reads and writes: site admin credentials, tenant credentials.

Why this module exists apart from the generic client:

- Secret ``data`` is base64; decoding it in one place means every caller gets the same
  answer for a malformed value (``None``: "not there"), and no caller builds its own
  ``stringData`` (which the API server folds into ``data`` and never returns, so an
  object written with it would look drifted on every reconcile).
- The admin credentials of each PostgreSQL site live in a Secret in the operator's
  namespace (named by the site configuration). The data layer asks for them whenever it
  (re)builds a site's connection pool, which happens after an authentication failure,
  so the Secret is read through a short cache: cheap on a busy operator, and an admin
  password rotated by the platform team is picked up within ``ttl_seconds``, or at once
  when the caller reports the old credentials as rejected (:meth:`invalidate`).
- Errors carry the Secret's namespace and name, never its contents.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable, Mapping

from cleo_operator.api.objects import KubeObject
from cleo_operator.data.errors import DataError, SiteConfigError
from cleo_operator.data.sites import AdminCredentials, SiteConfig
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import SECRET


class AdminSecretUnavailable(DataError):
    """A site's admin Secret is missing or cannot be read (RBAC, API server down)."""

    reason = "AdminSecretUnavailable"


def secret_value(secret: KubeObject | None, key: str) -> str | None:
    """The UTF-8 text under ``data[key]``; None when absent, empty or not valid base64/UTF-8."""
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def encode_secret_data(values: Mapping[str, str]) -> dict[str, str]:
    """``data`` for a Secret: each value base64-encoded, keys sorted (stable hashes)."""
    return {key: base64.b64encode(values[key].encode()).decode("ascii") for key in sorted(values)}


class AdminCredentialsFromSecrets:
    """The data layer's credentials provider: reads each site's ``adminSecret``, cached.

    Thread-safe; the lock is never held while talking to the API server, so a slow read
    for one site does not hold up another.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, AdminCredentials]] = {}

    def __call__(self, site: SiteConfig) -> AdminCredentials:
        """The admin credentials of ``site`` (from the cache when read recently)."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(site.name)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        credentials = self.read(site)
        with self._lock:
            self._cache[site.name] = (now, credentials)
        return credentials

    def read(self, site: SiteConfig) -> AdminCredentials:
        """Read the site's admin Secret now, bypassing (and not filling) the cache."""
        ref = site.admin_secret
        if ref is None:
            raise SiteConfigError(
                f"sites.{site.name}.adminSecret: not set; name the Secret with the site "
                "admin's username and password.",
                site=site.name,
            )
        where = f"{ref.namespace}/{ref.name}"
        try:
            secret = self._kube.get(SECRET, ref.name, namespace=ref.namespace)
        except KubeError as exc:
            raise AdminSecretUnavailable(
                f"site {site.name!r}: cannot read its admin Secret {where}: {exc.status} "
                f"{exc.reason}. Let the operator's ServiceAccount get Secrets in "
                f"{ref.namespace}.",
                site=site.name,
            ) from None
        except Exception as exc:
            # urllib3/socket errors: the API server is not answering.
            raise AdminSecretUnavailable(
                f"site {site.name!r}: cannot read its admin Secret {where}: "
                f"{type(exc).__name__}; is the API server reachable?",
                site=site.name,
            ) from None
        if secret is None:
            raise AdminSecretUnavailable(
                f"site {site.name!r}: its admin Secret {where} does not exist; create it "
                "with the keys username and password (e.g. kubectl create secret generic "
                f"{ref.name} -n {ref.namespace} --from-literal=username=... "
                "--from-literal=password=...).",
                site=site.name,
            )
        try:
            return AdminCredentials.from_secret_data(secret.get("data") or {}, where=where)
        except SiteConfigError as exc:
            raise SiteConfigError(exc.message, site=site.name) from None

    def invalidate(self, site: str | None = None) -> None:
        """Forget the cached credentials of ``site`` (or of every site)."""
        with self._lock:
            if site is None:
                self._cache.clear()
            else:
                self._cache.pop(site, None)

    def cached(self, site: str) -> AdminCredentials | None:
        """The cached credentials of ``site``, however old; None when none are cached."""
        with self._lock:
            entry = self._cache.get(site)
        return None if entry is None else entry[1]
