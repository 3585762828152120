"""An in-memory fake of the Kubernetes API server, behind the operator's `KubeClient`.

`FakeKube` is a `KubeClient` whose `request` answers from memory instead of the network:
the verbs the reconcilers call (get, list, create, apply, patch_merge, delete) are the real
client's, so a reconciler takes it wherever it takes a KubeClient, and what is faked is
only the API server behind the HTTP paths.

Why a fake: a reconciler's decisions (what to create, what to leave alone, what to refuse,
how many writes a no-op costs) can be judged in milliseconds without a control plane,
while the control-plane tests (tests/integration, tests/security, e2e) remain the proof
that the operator works against a real API server. This is a fake of that boundary only,
and tests/integration/test_fake_kube_contract.py runs the same scenarios against it and
against the local API server, so that where it claims to behave like one, it does.

What it models, because reconcilers decide on it:
- `metadata.uid`, `creationTimestamp`, a cluster-wide `resourceVersion` that changes only
  when an object changes (an identical write leaves it alone, as the API server does), and
  `generation` for the kinds that have one (custom resources: anything outside metadata and
  status; the built-in workloads and policies: their spec, and a Deployment's annotations);
- errors as `KubeError` with the API server's codes and reasons: 404 NotFound, 409
  AlreadyExists and Conflict (a stale resourceVersion, a delete's failed preconditions, an
  apply with a uid that creates), 422 Invalid (a bad name, another uid in a write's body, a
  new finalizer on an object being deleted), 400 BadRequest (a bad label selector), 403
  Forbidden (new content in a namespace that is terminating), and 404 for a namespaced
  object in a namespace that does not exist;
- label selectors: equality (`=`, `==`, `!=`), set-based (`in`, `notin`) and existence
  (`key`, `!key`);
- server-side apply as a merge of the applied fields into the object, where fields this
  field manager applied before and no longer applies are removed (unless a later
  non-apply write changed them, which takes them over, as another manager would);
- the status subresource: a status write changes only status (never spec or generation),
  and a write of the main resource leaves status alone, for the kinds that have one;
- deletion with finalizers: `deletionTimestamp` is set (and generation bumped) and the
  object stays until its finalizers are empty; no finalizer can be added meanwhile;
- a Namespace's server-set parts (phase Active, the `kubernetes.io/metadata.name` label,
  the `kubernetes` finalizer): deleted, it is Terminating and refuses new content (403)
  until a test calls `finish_namespace_deletions` (the namespace controller's work, on
  demand), which removes everything in it;
- list items of built-in kinds come without apiVersion and kind, as the API server sends
  them (custom resources keep theirs);
- an update (PUT) replaces the object whole, over the resourceVersion its body names (409
  Conflict for another one), as the leader election renews its Lease;
- a SelfSubjectAccessReview (the tenant reconciler waits with one until its RoleBinding is
  in effect) answered by `authorize` (default: allowed), and a SelfSubjectReview answered
  with `username`.

What it does not model (a test that depends on these belongs on the control plane):
field ownership conflicts (apply always wins, lists are replaced whole instead of merged by
key, there is no managedFields), defaulting and schema validation (a CRD's defaults, a
Service's clusterIP), admission (Pod Security, webhooks, validating admission policies),
authorization of the requests themselves (nothing is ever Forbidden for lack of rights),
the garbage collector (ownerReferences are kept and nothing is deleted with its owner;
propagation policies make no difference), controllers (a Deployment never gets pods or
status unless a test writes it), watches, and other `request` paths, which raise
NotImplementedError so that no test passes on a request the fake does not understand.

Every write request is logged in `writes` (method, kind, namespace, name, subresource),
refused or not, as the API server's audit log would see it: a test counts them.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import (
    BACKUP,
    CRD,
    CRON_JOB,
    DEPLOYMENT,
    FAILOVER,
    HPA,
    JOB,
    KINDS,
    NAMESPACE,
    NETWORK_POLICY,
    PDB,
    POD,
    PVC,
    RESOURCE_QUOTA,
    SERVICE,
    TENANT,
    Kind,
)

__all__ = ["FakeKube", "Write", "parse_selector", "selects"]

CUSTOM_KINDS: Final = frozenset({TENANT, BACKUP, FAILOVER})
GENERATION_KINDS: Final = CUSTOM_KINDS | {DEPLOYMENT, JOB, CRON_JOB, NETWORK_POLICY, PDB, CRD}
"""The kinds the API server gives a metadata.generation."""
STATUS_KINDS: Final = CUSTOM_KINDS | {
    NAMESPACE,
    POD,
    SERVICE,
    PVC,
    RESOURCE_QUOTA,
    DEPLOYMENT,
    JOB,
    CRON_JOB,
    HPA,
    PDB,
    CRD,
}
"""The kinds with a status subresource (all three of our CRDs declare one)."""
SYSTEM_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
NAME_LABEL: Final = "kubernetes.io/metadata.name"
# Metadata the API server sets and keeps; a write cannot change it.
SERVER_METADATA: Final = frozenset(
    {"uid", "creationTimestamp", "resourceVersion", "generation", "selfLink", "managedFields"}
    | {"deletionTimestamp", "deletionGracePeriodSeconds"}
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SELECTOR_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_SELECTOR_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"

Key = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name); namespace "" for cluster-scoped kinds."""
Path = tuple[str, ...]


@dataclass(frozen=True)
class Write:
    """One write request, as an audit log would list it."""

    method: str
    """The verb: create, apply, patch, update (a PUT) or delete."""
    kind: str
    namespace: str
    name: str
    subresource: str = ""


# -- label selectors ---------------------------------------------------------------------


def _split_requirements(text: str) -> list[str]:
    """Split at the commas that are not inside the parentheses of a set."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


Requirement = tuple[str, str, frozenset[str]]
"""(key, operator, values): operator one of = != in notin exists !exists."""


def parse_selector(text: str) -> list[Requirement]:
    """The requirements of a label selector; ValueError when it is not one."""
    requirements: list[Requirement] = []
    for raw in _split_requirements(text):
        req = raw.strip()
        if match := re.fullmatch(rf"!\s*({_SELECTOR_KEY})", req):
            requirements.append((match.group(1), "!exists", frozenset()))
        elif match := re.fullmatch(rf"({_SELECTOR_KEY})\s*(==|=|!=)\s*({_SELECTOR_VALUE})", req):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append((match.group(1), op, frozenset({match.group(3)})))
        elif match := re.fullmatch(rf"({_SELECTOR_KEY})\s+(in|notin)\s*\(([^()]*)\)", req):
            values = frozenset(v.strip() for v in match.group(3).split(","))
            if not all(re.fullmatch(_SELECTOR_VALUE, v) for v in values):
                raise ValueError(f"invalid value in {req!r}")
            requirements.append((match.group(1), match.group(2), values))
        elif re.fullmatch(_SELECTOR_KEY, req):
            requirements.append((req, "exists", frozenset()))
        else:
            raise ValueError(f"unable to parse requirement {req!r}")
    return requirements


def selects(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether `labels` meet every requirement (a missing label is never equal, and never
    in a set; it is always unequal, and always not in one)."""
    for key, op, values in requirements:
        value = labels.get(key)
        met = {
            "exists": key in labels,
            "!exists": key not in labels,
            "=": value in values,
            "in": value in values,
            "!=": value not in values,
            "notin": value not in values,
        }[op]
        if not met:
            return False
    return True


# -- JSON helpers ------------------------------------------------------------------------


def merge_patch(target: object, patch: object) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _leaves(obj: Mapping[str, Any], prefix: Path = ()) -> Iterator[Path]:
    """The paths of the fields of `obj` (a list is one field: the fake replaces it whole;
    an empty map is none)."""
    for key, value in obj.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _lookup(obj: Mapping[str, Any], path: Path) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Remove the field at `path`, and the maps left empty by it."""
    trail: list[tuple[dict[str, Any], str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        trail.append((node, key))
        node = node[key]
    node.pop(path[-1], None)
    for parent, key in reversed(trail):
        if parent[key]:
            break
        del parent[key]


def _merge_applied(target: dict[str, Any], applied: Mapping[str, Any]) -> None:
    for key, value in applied.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_applied(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


_MISSING: Final = object()


# -- the fake ----------------------------------------------------------------------------


class FakeKube(KubeClient):
    """A KubeClient over an in-memory API server (see the module docstring for its limits).

    It does not call `KubeClient.__init__`: there is no ApiClient and no network; the
    client's verbs send their requests to `request` below. Thread-safe like the real
    client, because reconcilers share one across worker threads.
    """

    def __init__(
        self,
        *,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        authorize: Callable[[Mapping[str, str]], bool] = lambda attributes: True,
        username: str = "system:serviceaccount:cleo-system:cleo-operator",
        namespaces: tuple[str, ...] = SYSTEM_NAMESPACES,
    ) -> None:
        self._state = threading.RLock()
        self.now = now
        self.authorize = authorize
        """Answers SelfSubjectAccessReviews: their spec.resourceAttributes -> allowed."""
        self.username = username
        self.writes: list[Write] = []
        self.access_reviews: list[Mapping[str, str]] = []
        self._objects: dict[Key, KubeObject] = {}
        self._applied: dict[Key, set[Path]] = {}
        self._versions = itertools.count(1000)
        self._refusals: list[tuple[str, Kind, str | None, str | None, tuple[int, str, str]]] = []
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.writes.clear()

    @property
    def host(self) -> str:
        return "https://fake-kube.invalid"

    # -- test controls (not part of KubeClient) ------------------------------------------

    def refuse(
        self,
        method: str,
        kind: Kind,
        name: str | None = None,
        *,
        status: int = 422,
        reason: str = "Invalid",
        message: str = "refused by the test",
        subresource: str | None = None,
    ) -> None:
        """From now on, answer `method` (create, apply, patch, update, delete) on `kind` (and
        `name`, when given; only on `subresource`, such as ``status``, when given) with
        this error, as the API server or an admission would."""
        with self._state:
            self._refusals.append((method, kind, name, subresource, (status, reason, message)))

    def finish_namespace_deletions(self) -> list[str]:
        """Do the namespace controller's work: every terminating namespace loses its content
        and its `kubernetes` finalizer, and goes unless its metadata finalizers hold it.
        Returns the namespaces emptied."""
        with self._state:
            terminating = [
                key
                for key, obj in self._objects.items()
                if key[:2] == (NAMESPACE.api_version, NAMESPACE.kind)
                and obj["metadata"].get("deletionTimestamp")
            ]
            for key in terminating:
                for inner in [k for k in self._objects if k[2] == key[3]]:
                    self._drop(inner)
                ns = self._objects[key]
                ns["spec"]["finalizers"] = []
                ns["metadata"]["resourceVersion"] = self._next_version()
                if not _held(ns):
                    self._drop(key)
            return [key[3] for key in terminating]

    def writes_to(self, namespace: str) -> list[Write]:
        """The write requests into `namespace` (and of the Namespace object itself)."""
        return [
            w
            for w in self.writes
            if w.namespace == namespace or (w.kind == "Namespace" and w.name == namespace)
        ]

    def objects(self, kind: Kind, *, namespace: str | None = None) -> list[KubeObject]:
        """Every stored object of `kind` (in `namespace`), as a get would return it."""
        with self._state:
            return [
                copy.deepcopy(obj)
                for (api_version, kind_name, ns, _), obj in sorted(self._objects.items())
                if (api_version, kind_name) == (kind.api_version, kind.kind)
                and (namespace is None or ns == namespace)
            ]

    # -- KubeClient ----------------------------------------------------------------------

    def request(self, method: str, path: str, **options: Any) -> Any:
        """Answer one request as the API server would (see the module docstring)."""
        body = options.get("body")
        query: Mapping[str, str] = options.get("query") or {}
        what = options.get("what") or f"{method} {path}"
        body_map: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        if (method, path) == ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"):
            attributes = dict((body_map.get("spec") or {}).get("resourceAttributes") or {})
            with self._state:
                self.access_reviews.append(attributes)
            return {**body_map, "status": {"allowed": bool(self.authorize(attributes))}}
        if (method, path) == ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews"):
            return {**body_map, "status": {"userInfo": {"username": self.username}}}
        route = _route(path)
        if route is None:
            raise NotImplementedError(f"FakeKube does not model {method} {path} ({what})")
        kind, namespace, name, subresource = route
        content_type = options.get("content_type", "application/json")
        with self._state:
            if method == "GET" and name is None and subresource is None:
                return {"items": self._list(kind, namespace, query.get("labelSelector"), what)}
            if method == "GET" and name is not None and subresource is None:
                return self._get(kind, namespace, name, what)
            if method == "POST" and name is None:
                return self._create(kind, namespace, body_map, what)
            if method == "PATCH" and name is not None:
                if content_type == "application/apply-patch+yaml" and subresource is None:
                    return self._apply(kind, namespace, name, body_map, what)
                if content_type == "application/merge-patch+json":
                    return self._patch(
                        kind, namespace, name, body_map, what, subresource=subresource
                    )
            if method == "DELETE" and name is not None and subresource is None:
                return self._delete(kind, namespace, name, body_map, what)
            if method == "PUT" and name is not None and subresource is None:
                return self._update(kind, namespace, name, body_map, what)
        raise NotImplementedError(f"FakeKube does not model {method} {path} ({what})")

    # -- the verbs -------------------------------------------------------------------------

    def _get(self, kind: Kind, namespace: str | None, name: str, what: str) -> KubeObject:
        obj = self._objects.get(_key(kind, namespace, name))
        if obj is None:
            raise _not_found(kind, name, what)
        return copy.deepcopy(obj)

    def _list(
        self, kind: Kind, namespace: str | None, selector: str | None, what: str
    ) -> list[KubeObject]:
        try:
            requirements = parse_selector(selector) if selector else []
        except ValueError as exc:
            raise _error(400, "BadRequest", f"unable to parse requirement: {exc}", what) from None
        items = []
        for obj in self.objects(kind, namespace=namespace):
            if selects(requirements, obj["metadata"].get("labels") or {}):
                if kind not in CUSTOM_KINDS:
                    obj.pop("apiVersion", None)
                    obj.pop("kind", None)
                items.append(obj)
        return items

    def _create(
        self, kind: Kind, namespace: str | None, obj: Mapping[str, Any], what: str
    ) -> KubeObject:
        meta = obj.get("metadata") or {}
        namespace = self._body_namespace(kind, namespace, meta, what)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + secrets.token_hex(3)[:5]
        self._log("create", kind, namespace, name)
        self._check_refusal("create", kind, name, what)
        self._check_name(kind, name, what)
        self._check_namespace(kind, namespace, what)
        key = _key(kind, namespace, name)
        if key in self._objects:
            raise _error(409, "AlreadyExists", f'{kind.plural} "{name}" already exists', what)
        new = copy.deepcopy(dict(obj))
        new["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
        return copy.deepcopy(self._store_new(kind, key, new))

    def _apply(
        self, kind: Kind, namespace: str | None, name: str, obj: Mapping[str, Any], what: str
    ) -> KubeObject:
        meta = obj.get("metadata") or {}
        self._log("apply", kind, namespace, name)
        self._check_refusal("apply", kind, name, what)
        self._check_name(kind, name, what)
        key = _key(kind, namespace, name)
        applied = copy.deepcopy(dict(obj))
        applied["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
        if kind in STATUS_KINDS:
            applied.pop("status", None)  # the main resource does not write status
        fields = set(_leaves(applied)) - {("apiVersion",), ("kind",)}
        current = self._objects.get(key)
        if current is None:
            self._check_namespace(kind, namespace, what)
            if meta.get("uid"):
                raise _error(
                    409,
                    "Conflict",
                    f"uid mismatch: the provided object specified uid {meta['uid']}, and no "
                    "existing object was found",
                    what,
                )
            stored = self._store_new(kind, key, applied)
        else:
            self._check_preconditions(current, meta, what, delete=False)
            new = copy.deepcopy(current)
            for path in self._applied.get(key, set()) - fields:
                _remove(new, path)
            _merge_applied(new, applied)
            stored = self._commit(kind, key, current, new, what)
        if key in self._objects:
            self._applied[key] = fields
        return copy.deepcopy(stored)

    def _patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        what: str,
        *,
        subresource: str | None,
    ) -> KubeObject:
        self._log("patch", kind, namespace, name, subresource or "")
        self._check_refusal("patch", kind, name, what, subresource=subresource or "")
        key = _key(kind, namespace, name)
        current = self._objects.get(key)
        if subresource not in (None, "status") or (
            subresource == "status" and kind not in STATUS_KINDS
        ):
            raise _error(404, "NotFound", "the server could not find the requested resource", what)
        if current is None:
            raise _not_found(kind, name, what)
        self._check_preconditions(current, patch.get("metadata") or {}, what, delete=False)
        patched: dict[str, Any] = merge_patch(current, patch)
        if subresource == "status":
            new = copy.deepcopy(current)
            _set_or_drop(new, "status", patched.get("status"))
        else:
            new = patched
            if kind in STATUS_KINDS:
                _set_or_drop(new, "status", current.get("status"))
        stored = self._commit(kind, key, current, new, what)
        self._take_over(key, current, stored)
        return copy.deepcopy(stored)

    def _update(
        self, kind: Kind, namespace: str | None, name: str, obj: Mapping[str, Any], what: str
    ) -> KubeObject:
        """A PUT: the object replaced whole (status kept), over its resourceVersion if the
        body names one (409 Conflict otherwise)."""
        self._log("update", kind, namespace, name)
        self._check_refusal("update", kind, name, what)
        key = _key(kind, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise _not_found(kind, name, what)
        meta = obj.get("metadata") or {}
        self._check_preconditions(current, meta, what, delete=False)
        new = copy.deepcopy(dict(obj))
        new["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
        if kind in STATUS_KINDS:
            _set_or_drop(new, "status", current.get("status"))
        stored = self._commit(kind, key, current, new, what)
        self._take_over(key, current, stored)
        return copy.deepcopy(stored)

    def _delete(
        self, kind: Kind, namespace: str | None, name: str, options: Mapping[str, Any], what: str
    ) -> KubeObject:
        """The propagation policy makes no difference: there is no garbage collector."""
        self._log("delete", kind, namespace, name)
        self._check_refusal("delete", kind, name, what)
        key = _key(kind, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise _not_found(kind, name, what)
        self._check_preconditions(current, options.get("preconditions") or {}, what, delete=True)
        if not _held(current):
            self._drop(key)
            return copy.deepcopy(current)
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            return copy.deepcopy(current)
        deleting = copy.deepcopy(current)
        deleting["metadata"]["deletionTimestamp"] = self._timestamp()
        deleting["metadata"]["deletionGracePeriodSeconds"] = 0
        if "generation" in meta:
            deleting["metadata"]["generation"] = int(meta["generation"]) + 1
        if kind == NAMESPACE:
            deleting.setdefault("status", {})["phase"] = "Terminating"
        deleting["metadata"]["resourceVersion"] = self._next_version()
        self._objects[key] = deleting
        return copy.deepcopy(deleting)

    # -- bookkeeping ---------------------------------------------------------------------

    def _log(
        self, method: str, kind: Kind, namespace: str | None, name: str, subresource: str = ""
    ) -> None:
        self.writes.append(Write(method, kind.kind, namespace or "", name, subresource))

    def _check_refusal(
        self, method: str, kind: Kind, name: str, what: str, *, subresource: str = ""
    ) -> None:
        for refused_method, refused_kind, refused_name, refused_sub, answer in self._refusals:
            if (
                (refused_method, refused_kind) == (method, kind)
                and refused_name in (None, name)
                and refused_sub in (None, subresource)
            ):
                raise _error(*answer, what)

    def _body_namespace(
        self, kind: Kind, namespace: str | None, meta: Mapping[str, Any], what: str
    ) -> str | None:
        """The namespace of a created object: the request's; the body's must agree."""
        if not kind.namespaced:
            return None
        stated = meta.get("namespace")
        if stated and namespace and stated != namespace:
            raise _error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
                what,
            )
        return namespace or stated

    def _check_name(self, kind: Kind, name: str, what: str) -> None:
        if not name:
            raise _error(422, "Invalid", "metadata.name: Required value: name is required", what)
        pattern = _DNS_LABEL if kind in (NAMESPACE, SERVICE) else _DNS_SUBDOMAIN
        if not pattern.match(name):
            raise _error(
                422,
                "Invalid",
                f'{kind.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}"',
                what,
            )

    def _check_namespace(self, kind: Kind, namespace: str | None, what: str) -> None:
        if not kind.namespaced:
            return
        if not namespace:
            raise _error(404, "NotFound", "the server could not find the requested resource", what)
        ns = self._objects.get(_key(NAMESPACE, None, namespace))
        if ns is None:
            raise _error(404, "NotFound", f'namespaces "{namespace}" not found', what)
        if ns["metadata"].get("deletionTimestamp"):
            raise _error(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                what,
            )

    def _check_preconditions(
        self, current: Mapping[str, Any], wanted: Mapping[str, Any], what: str, *, delete: bool
    ) -> None:
        """A uid or resourceVersion in a write's body (or a delete's preconditions) must be
        the object's; a body's other uid is an immutable field changed (422), a delete's a
        failed precondition (409)."""
        meta = current["metadata"]
        uid = wanted.get("uid")
        if uid and uid != meta["uid"]:
            if delete:
                raise _error(
                    409,
                    "Conflict",
                    f"the UID in the precondition ({uid}) does not match the UID in record "
                    f"({meta['uid']}). The object might have been deleted and then recreated",
                    what,
                )
            raise _error(
                422, "Invalid", f'metadata.uid: Invalid value: "{uid}": field is immutable', what
            )
        version = wanted.get("resourceVersion")
        if version and version != meta["resourceVersion"]:
            raise _error(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
                what,
            )

    def _store_new(self, kind: Kind, key: Key, new: dict[str, Any]) -> KubeObject:
        meta = new["metadata"]
        meta["name"] = key[3]
        if kind.namespaced:
            meta["namespace"] = key[2]
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._timestamp()
        meta["resourceVersion"] = self._next_version()
        if kind in GENERATION_KINDS:
            meta["generation"] = 1
        if kind in STATUS_KINDS:
            new.pop("status", None)
        if kind == NAMESPACE:
            meta.setdefault("labels", {})[NAME_LABEL] = key[3]
            new["spec"] = {"finalizers": ["kubernetes"]}
            new["status"] = {"phase": "Active"}
        self._objects[key] = new
        return new

    def _commit(
        self, kind: Kind, key: Key, current: KubeObject, new: dict[str, Any], what: str
    ) -> KubeObject:
        """Store `new` in place of `current`, as the API server would; a no-op stays one."""
        old_meta = current["metadata"]
        meta = new.setdefault("metadata", {})
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        for field in (*SERVER_METADATA, "name", "namespace"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if kind == NAMESPACE:
            meta.setdefault("labels", {})[NAME_LABEL] = key[3]
            new["spec"] = copy.deepcopy(current.get("spec") or {})  # only via /finalize
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise _error(
                    422,
                    "Invalid",
                    f"metadata.finalizers: Forbidden: no new finalizers can be added if the "
                    f"object is being deleted, found new finalizers {sorted(added)}",
                    what,
                )
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if new == current:
            return current
        if kind in GENERATION_KINDS and _generation_part(kind, new) != _generation_part(
            kind, current
        ):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        meta["resourceVersion"] = self._next_version()
        if meta.get("deletionTimestamp") and not _held(new):
            self._drop(key)
            return new
        self._objects[key] = new
        return new

    def _take_over(self, key: Key, before: KubeObject, after: KubeObject) -> None:
        """Fields another write changed are no longer this field manager's to remove."""
        owned = self._applied.get(key)
        if owned:
            self._applied[key] = {p for p in owned if _lookup(before, p) == _lookup(after, p)}

    def _drop(self, key: Key) -> None:
        self._objects.pop(key, None)
        self._applied.pop(key, None)

    def _next_version(self) -> str:
        return str(next(self._versions))

    def _timestamp(self) -> str:
        return self.now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ROUTES: Final = {(k.api_version, k.plural): k for k in KINDS.values()}


def _route(path: str) -> tuple[Kind, str | None, str | None, str | None] | None:
    """(kind, namespace, name, subresource) of an API path of a known kind, or None."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:1] == ["api"] and len(parts) >= 3:
        api_version, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    inner = _ROUTES.get((api_version, rest[2])) if len(rest) >= 3 else None
    if rest[0] == "namespaces" and inner is not None and inner.namespaced:
        namespace, rest = rest[1], rest[2:]
    kind = _ROUTES.get((api_version, rest[0]))
    if kind is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return kind, namespace, name, subresource


def _not_found(kind: Kind, name: str, what: str) -> KubeError:
    return _error(404, "NotFound", f'{kind.plural} "{name}" not found', what)


def _key(kind: Kind, namespace: str | None, name: str) -> Key:
    return (kind.api_version, kind.kind, (namespace or "") if kind.namespaced else "", name)


def _held(obj: Mapping[str, Any]) -> bool:
    """Whether finalizers keep `obj` (a Namespace: its spec's too) from going."""
    if obj["metadata"].get("finalizers"):
        return True
    return obj.get("kind") == NAMESPACE.kind and bool((obj.get("spec") or {}).get("finalizers"))


def _error(status: int, reason: str, message: str, what: str) -> KubeError:
    return KubeError(status=status, reason=reason, message=message, what=what)


def _set_or_drop(obj: dict[str, Any], field: str, value: object) -> None:
    if value is None:
        obj.pop(field, None)
    else:
        obj[field] = copy.deepcopy(value)


def _generation_part(kind: Kind, obj: Mapping[str, Any]) -> object:
    """What a change of bumps the generation: everything outside metadata and status."""
    part = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    if kind == DEPLOYMENT:
        # Annotations are copied to the ReplicaSets, so they count for a Deployment.
        part["annotations"] = obj["metadata"].get("annotations")
    return part
