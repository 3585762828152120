"""The plugin's way to the cluster: the user's kubeconfig and context, and one-line refusals.

Why not the operator's `KubeClient.from_environment`: a kubectl plugin acts as the person
running it, with the kubeconfig and context kubectl would use (`--kubeconfig`, `--context`,
$KUBECONFIG), never with a ServiceAccount token it happens to find in a pod.

Why errors are mapped here: the person reads one line. A 403 says what they may not do and
where ("you may not list cleobackups.cleoai.io in namespace cleo-acme"), never "not found":
a tenant admin asking about another tenant learns that it is not theirs to see, not whether
it exists. Nothing here prints an object's content, and a Secret is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes.config import ConfigException

from cleo_operator.api.objects import KubeObject
from cleo_operator.cli.common import CommandError
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import SECRET, Kind

__all__ = ["Forbidden", "Session", "connect", "resource_name"]


def resource_name(kind: Kind) -> str:
    """The resource as RBAC and `kubectl auth can-i` name it: cleobackups.cleoai.io."""
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def _scope(kind: Kind, namespace: str | None) -> str:
    if kind.namespaced and namespace:
        return f"in namespace {namespace}"
    return "at cluster scope" if not kind.namespaced else "in any namespace"


class Forbidden(CommandError):
    """The API server said 403: what the caller may not do, and where."""

    reason = "Forbidden"

    def __init__(self, *, verb: str, kind: Kind, namespace: str | None) -> None:
        super().__init__(f"you may not {verb} {resource_name(kind)} {_scope(kind, namespace)}")
        self.verb = verb
        self.kind = kind
        self.namespace = namespace


def _refusal(exc: KubeError, *, verb: str, kind: Kind, namespace: str | None) -> CommandError:
    if exc.status == 403:
        return Forbidden(verb=verb, kind=kind, namespace=namespace)
    if exc.status == 401:
        return CommandError(
            "the cluster did not accept your credentials (401 Unauthorized): check "
            "--kubeconfig and --context, or log in again"
        )
    return CommandError(
        f"cannot {verb} {resource_name(kind)} {_scope(kind, namespace)}: the API server "
        f"answered {exc.status} {exc.reason}: {exc.message}".rstrip(": ")
    )


@dataclass(frozen=True)
class Session:
    """Reads and writes as the user, each failure a one-line `CommandError`."""

    kube: KubeClient

    def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> KubeObject | None:
        """The object, None when it does not exist; `Forbidden` when it is not ours to see."""
        self._no_secrets(kind)
        try:
            return self.kube.get(kind, name, namespace=namespace)
        except KubeError as exc:
            raise _refusal(exc, verb="get", kind=kind, namespace=namespace) from None

    def list(
        self, kind: Kind, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[KubeObject]:
        """The objects, each with its apiVersion and kind (a list's items carry neither)."""
        self._no_secrets(kind)
        try:
            items = self.kube.list(kind, namespace=namespace, label_selector=label_selector)
        except KubeError as exc:
            raise _refusal(exc, verb="list", kind=kind, namespace=namespace) from None
        return [{"apiVersion": kind.api_version, "kind": kind.kind, **item} for item in items]

    def create(self, obj: dict[str, Any], *, kind: Kind) -> KubeObject:
        namespace = obj["metadata"].get("namespace")
        try:
            return self.kube.create(obj)
        except KubeError as exc:
            if exc.conflict:
                raise CommandError(
                    f"{kind.kind} {namespace}/{obj['metadata']['name']} already exists"
                ) from None
            if exc.invalid:
                raise CommandError(
                    f"the API server refused the {kind.kind}: {exc.message}"
                ) from None
            raise _refusal(exc, verb="create", kind=kind, namespace=namespace) from None

    @staticmethod
    def _no_secrets(kind: Kind) -> None:
        # The plugin never reads a Secret: nothing it prints can then carry a value.
        if kind == SECRET:
            raise AssertionError("the kubectl plugin does not read Secrets")


def connect(*, kubeconfig: str | None, context: str | None) -> Session:
    """A session with the user's kubeconfig (`kubeconfig` or $KUBECONFIG) and context."""
    try:
        return Session(KubeClient.from_kubeconfig(path=kubeconfig, context=context))
    except (ConfigException, OSError) as exc:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise CommandError(f"cannot use the kubeconfig ({where}): {exc}") from None
