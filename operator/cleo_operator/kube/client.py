"""A small typed client for the objects the operator manages.

Why not the generated `CoreV1Api`/`AppsV1Api` methods: the operator writes every child with
server-side apply and needs the same four verbs (apply, get, list, delete) for a dozen
kinds, plus status patches of our own resources. One generic path builder over the official
client's `ApiClient` (which keeps authentication, TLS and retries) gives exactly that, counts
every write for the metrics, and turns API errors into typed exceptions the reconcilers can
map onto conditions.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Final, Self
from urllib.parse import urlencode

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from opentelemetry.trace import SpanKind
from urllib3.util.retry import Retry

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.errors import KubeError
from cleo_operator.kube.fence import WriteFence
from cleo_operator.kube.kinds import Kind, kind_of
from cleo_operator.observability.metrics import API_WRITES
from cleo_operator.observability.tracing import child_span, count_write

__all__ = ["FIELD_MANAGER", "KubeClient", "KubeError", "ReadRetry"]
"""`KubeError` is defined in `kube.errors` (see there why) and raised here."""

log = logging.getLogger(__name__)

FIELD_MANAGER: Final = "cleo-operator"
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: never fenced (kube/fence.py)."""


class ReadRetry(Retry):
    """urllib3's resends, for reads only: a write that got no answer (a read timeout, a
    dropped connection, even a connect error) is not sent again by urllib3, since a resend
    would go out without the fence's check and with a fresh timeout, after the moment the
    fence bounded the first one by (the caller, a reconcile, tries again, checked)."""

    @classmethod
    def reads(cls, total: int) -> ReadRetry:
        """Up to `total` resends of a read; none of a write."""
        return cls(total, allowed_methods=READ_METHODS)

    def increment(self, method: str | None = None, *args: Any, **kwargs: Any) -> Self:
        # allowed_methods keeps writes from read errors' and statuses' resends; this, from
        # connect errors' (urllib3 resends any method after those).
        if method is not None and method.upper() not in READ_METHODS:
            exhausted = self.new(total=0)
            return Retry.increment(exhausted, method, *args, **kwargs)  # raises MaxRetryError
        return super().increment(method, *args, **kwargs)


class KubeClient:
    """Thread-safe: the reconcilers run in worker threads and share one client."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = api_client
        self._lock = threading.Lock()
        self.fence: WriteFence | None = None
        """When set, every request but a read checks it first (kube/fence.py): a replica
        that no longer leads sends no write. None: unfenced (the CLI's other commands, the
        leader election's own client)."""

    @classmethod
    def from_environment(
        cls,
        *,
        context: str | None = None,
        pool_size: int = 16,
        retries: int | None = None,
        resend_writes: bool = True,
    ) -> KubeClient:
        """In-cluster credentials when running in a pod, the kubeconfig otherwise.

        `retries`: how often urllib3 resends a request that got no answer (its default,
        three, when None); 0 for a caller whose every request must end within its timeout
        (the leader election: a resend would outlast the renew deadline).
        `resend_writes=False`: only reads are resent (`ReadRetry`), for a client that gets
        a write fence (the reconcilers')."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                context=context, client_configuration=configuration
            )
        configuration.connection_pool_maxsize = pool_size
        if not resend_writes:
            configuration.retries = ReadRetry.reads(3 if retries is None else retries)
        elif retries is not None:
            configuration.retries = retries
        return cls(k8s.ApiClient(configuration))

    @classmethod
    def from_kubeconfig(
        cls, *, path: str | None = None, context: str | None = None, pool_size: int = 4
    ) -> KubeClient:
        """The user's kubeconfig only (never in-cluster credentials), as kubectl reads it:
        `path` or $KUBECONFIG or ~/.kube/config, and `context` or its current context."""
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration
        )
        configuration.connection_pool_maxsize = pool_size
        return cls(k8s.ApiClient(configuration))

    @property
    def host(self) -> str:
        host: str = self.api.configuration.host
        return host

    @property
    def user_agent(self) -> str:
        """The User-Agent of every request (the API server's audit log records it)."""
        agent: str = self.api.user_agent
        return agent

    @user_agent.setter
    def user_agent(self, value: str) -> None:
        self.api.user_agent = value

    # -- the raw request ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: object | None = None,
        content_type: str = "application/json",
        what: str = "",
        timeout: float = 30.0,
        target: tuple[str, Kind, str | None, str | None] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, or raise KubeError.

        A write (any method but a read) is not sent while the fence, if set, is closed:
        KubeError with reason NotLeader instead; and its timeout ends when the fence closes
        (a write may not land later than a margin after it). Inside a traced reconcile (or
        runner step) the request is a child span named by `target` (verb, kind, namespace,
        name), with the HTTP status; never the body."""
        attributes: dict[str, str] = {"http.request.method": method.upper()}
        verb = method.lower()
        if target is not None:
            verb, kind, namespace, name = target
            attributes.update(
                {"k8s.verb": verb, "k8s.kind": kind.kind, "k8s.resource": kind.plural}
            )
            if namespace:
                attributes["k8s.namespace"] = namespace
            if name:
                attributes["k8s.name"] = name
        title = f"{verb} {target[1].kind if target is not None else path}"
        with child_span(title, attributes, kind=SpanKind.CLIENT) as current:
            try:
                status, data = self._send(
                    method,
                    path,
                    query=query,
                    body=body,
                    content_type=content_type,
                    what=what,
                    timeout=timeout,
                )
            except KubeError as exc:
                if current.is_recording() and exc.status:
                    current.set_attribute("http.response.status_code", exc.status)
                raise
            if current.is_recording():
                current.set_attribute("http.response.status_code", status)
        return json.loads(data) if data else None

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: object | None,
        content_type: str,
        what: str,
        timeout: float,
    ) -> tuple[int, bytes]:
        """The response's status and body; KubeError for an error status."""
        if self.fence is not None and method.upper() not in READ_METHODS:
            timeout = min(timeout, self.fence.check(what or f"{method} {path}"))
        url = self.host + path
        if query:
            url += "?" + urlencode(query)
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": self.user_agent,
        }
        # ApiClient.update_params_for_auth adds the bearer token or client certificate.
        self.api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        try:
            # The REST client serializes structured bodies itself (JSON is valid YAML, so
            # this covers apply patches too); a pre-serialized string would be encoded twice.
            response = self.api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=timeout
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise _to_kube_error(exc, what or f"{method} {path}") from None
        if response.status >= 400:
            raise _error_from_body(response.status, str(response.reason), data, what)
        return int(response.status), data

    def _write(
        self,
        verb: str,
        kind: Kind,
        method: str,
        path: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        API_WRITES.labels(verb=verb, resource=kind.plural).inc()
        count_write()
        return self.request(method, path, target=(verb, kind, namespace, name), **kwargs)

    # -- verbs -------------------------------------------------------------------------

    def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> KubeObject | None:
        """The object, or None when it does not exist."""
        try:
            obj: KubeObject = self.request(
                "GET",
                kind.path(namespace=namespace, name=name),
                what=f"get {kind.kind} {name}",
                target=("get", kind, namespace, name),
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return obj

    def list(
        self,
        kind: Kind,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[KubeObject]:
        query = {"labelSelector": label_selector} if label_selector else None
        result = self.request(
            "GET",
            kind.path(namespace=namespace),
            query=query,
            what=f"list {kind.plural}",
            target=("list", kind, namespace, None),
        )
        items: list[KubeObject] = result.get("items", [])
        return items

    def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> KubeObject:
        """Server-side apply `obj` as the `cleo-operator` field manager."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        path = kind.path(namespace=meta.get("namespace"), name=meta["name"])
        result: KubeObject = self._write(
            "apply",
            kind,
            "PATCH",
            path,
            namespace=meta.get("namespace"),
            name=meta["name"],
            query={"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"},
            body=obj,
            content_type="application/apply-patch+yaml",
            what=f"apply {kind.kind} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " "),
        )
        return result

    def patch_merge(
        self,
        kind: Kind,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> KubeObject:
        """A JSON merge patch (for our own resources' status and metadata)."""
        path = kind.path(namespace=namespace, name=name)
        if subresource:
            path += f"/{subresource}"
        result: KubeObject = self._write(
            f"patch-{subresource}" if subresource else "patch",
            kind,
            "PATCH",
            path,
            namespace=namespace,
            name=name,
            body=patch,
            content_type="application/merge-patch+json",
            what=f"patch {kind.kind} {name}",
        )
        return result

    def delete(
        self,
        kind: Kind,
        name: str,
        *,
        namespace: str | None = None,
        propagation: str = "Background",
        preconditions: Mapping[str, str] | None = None,
    ) -> bool:
        """Delete; True if a deletion was requested, False if it was already gone.

        `preconditions` (uid, resourceVersion): the API server deletes only that very object,
        and answers 409 Conflict otherwise.
        """
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if preconditions:
            body["preconditions"] = dict(preconditions)
        try:
            self._write(
                "delete",
                kind,
                "DELETE",
                kind.path(namespace=namespace, name=name),
                namespace=namespace,
                name=name,
                body=body,
                what=f"delete {kind.kind} {name}",
            )
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def create(self, obj: Mapping[str, Any]) -> KubeObject:
        """POST a new object (for things that are created once, like Events)."""
        kind = kind_of(obj)
        result: KubeObject = self._write(
            "create",
            kind,
            "POST",
            kind.path(namespace=obj["metadata"].get("namespace")),
            namespace=obj["metadata"].get("namespace"),
            name=obj["metadata"].get("name"),
            query={"fieldManager": FIELD_MANAGER},
            body=obj,
            what=f"create {kind.kind}",
        )
        return result


def _error_from_body(status: int, reason: str, body: object, what: str) -> KubeError:
    """A KubeError from the API server's Status object (its reason and message)."""
    message = ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if body:
        try:
            decoded = json.loads(str(body))
            reason = decoded.get("reason") or reason
            message = decoded.get("message", "")
        except (ValueError, AttributeError):
            message = str(body)[:500]
    return KubeError(status=status, reason=reason, message=message, what=what)


def _to_kube_error(exc: ApiException, what: str) -> KubeError:
    return _error_from_body(int(exc.status or 0), str(exc.reason or ""), exc.body, what)
