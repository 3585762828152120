"""Whether a CleoTenant may use a namespace: a pure decision from what the cluster has.

The author of a CleoTenant (often a team's GitOps repository) chooses its namespace, and the
operator acts there with rights a tenant does not have: it writes Secrets, binds the
tenant's admins, copies keyrings, and with `deletionPolicy: Delete` deletes the namespace.
So a namespace is never taken on a name's word. A tenant may use namespace N only when:

- N does not exist: the operator creates it (atomically: a create, not an apply, so of two
  tenants racing for N exactly one wins), labelled with the tenant's uid and owned by it;
- N carries this tenant's uid (`cleoai.io/tenant-uid`; for namespaces made before that
  label existed, the CleoTenant controller owner reference, which carries the uid too);
- N carries no uid of a tenant that exists, and its owner handed it over explicitly with the
  annotation `cleoai.io/adopt: <tenant name>`. Only those who may write Namespace objects
  can put it there; tenant admins cannot. A namespace kept by a Retain deletion still
  carries the deleted tenant's uid: a new tenant of the same name needs the mark too,
  because names are reused, sometimes by another team.

Always refused, mark or not: the operator's own namespace (its keys and the sites' admin
credentials live there), the namespaces of Kubernetes itself (`default` and `kube-*`), and
every namespace that carries the uid of another tenant that exists; and ``svc`` and ``pod``,
named like zones of the cluster's DNS (see `DNS_ZONE_NAMESPACES`).

Uids, not names, are the proof: the tenant label can be copied, and a tenant's name can be
reused after it was deleted; a uid is never given twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from cleo_operator.api.tenant import (
    DNS_ZONE_NAMESPACES,
    SYSTEM_NAMESPACE_PREFIX,
    SYSTEM_NAMESPACES,
)
from cleo_operator.render.meta import (
    ADOPT_ANNOTATION,
    API_VERSION,
    TENANT_LABEL,
    TENANT_UID_LABEL,
)

Verdict = Literal["create", "owned", "adopt", "refused"]

OPERATOR_NAMESPACE_REASON: Final = "OperatorNamespace"
SYSTEM_NAMESPACE_REASON: Final = "SystemNamespace"
DNS_ZONE_REASON: Final = "NamespaceReservedForDNS"
NOT_OWNED_REASON: Final = "NamespaceNotOwned"
REFUSAL_REASONS: Final = frozenset(
    {OPERATOR_NAMESPACE_REASON, SYSTEM_NAMESPACE_REASON, DNS_ZONE_REASON, NOT_OWNED_REASON}
)


@dataclass(frozen=True)
class NamespaceClaim:
    """What the tenant may do with its namespace, and, when refused, why (for people)."""

    verdict: Verdict
    reason: str = ""
    message: str = ""

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"


def is_system_namespace(name: str) -> bool:
    """A namespace of Kubernetes itself: `default`, `kube-system` and every other `kube-*`;
    and `DNS_ZONE_NAMESPACES` (``svc``, ``pod``), whose owner could answer the cluster's DNS
    for names of every other namespace."""
    return (
        name in SYSTEM_NAMESPACES
        or name in DNS_ZONE_NAMESPACES
        or name.startswith(SYSTEM_NAMESPACE_PREFIX)
    )


def owner_uid(ns: Mapping[str, Any]) -> str | None:
    """The uid of the CleoTenant that owns namespace `ns`, or None.

    The `cleoai.io/tenant-uid` label when the namespace has it; otherwise (a namespace made
    before the label existed) the uid of its CleoTenant controller owner reference.
    """
    meta = ns.get("metadata") or {}
    label = (meta.get("labels") or {}).get(TENANT_UID_LABEL)
    if label:
        return str(label)
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("kind") == "CleoTenant"
            and str(ref.get("apiVersion", "")).split("/")[0] == API_VERSION.split("/")[0]
            and ref.get("controller")
            and ref.get("uid")
        ):
            return str(ref["uid"])
    return None


def _how_to_hand_over(namespace: str, tenant: str) -> str:
    return (
        f"to hand it to this tenant, its owner annotates it "
        f"(kubectl annotate namespace {namespace} {ADOPT_ANNOTATION}={tenant})"
    )


def claim_namespace(
    *,
    namespace: str,
    live: Mapping[str, Any] | None,
    tenant: str,
    uid: str,
    operator_namespace: str,
    tenants_by_uid: Callable[[], Mapping[str, str]],
) -> NamespaceClaim:
    """Whether tenant `tenant` (uid `uid`) may use `namespace`, as the cluster has it (`live`).

    `tenants_by_uid` lists the CleoTenants that exist (uid to name); it is called only when
    the namespace carries another uid.
    """
    if namespace == operator_namespace:
        return NamespaceClaim(
            "refused",
            OPERATOR_NAMESPACE_REASON,
            f"namespace {namespace} is the operator's namespace (its keys and the sites' "
            "credentials live there); no tenant may use it: create the tenant again under "
            "another name or with another spec.namespace",
        )
    if namespace in DNS_ZONE_NAMESPACES:
        # Checked before the admission rule existed, or with the CRD's rules not installed.
        return NamespaceClaim(
            "refused",
            DNS_ZONE_REASON,
            f"namespace {namespace} is named like a zone of the cluster's DNS "
            f"(<service>.<namespace>.svc names would be ambiguous with it); no tenant may "
            "use it: create the tenant again with another spec.namespace",
        )
    if is_system_namespace(namespace):
        return NamespaceClaim(
            "refused",
            SYSTEM_NAMESPACE_REASON,
            f"namespace {namespace} belongs to Kubernetes itself; no tenant may use it: "
            "create the tenant again with another spec.namespace",
        )
    if live is None:
        return NamespaceClaim("create")
    meta = live.get("metadata") or {}
    mark = (meta.get("annotations") or {}).get(ADOPT_ANNOTATION)
    owner = owner_uid(live)
    if owner == uid:
        return NamespaceClaim("owned")
    if owner is not None:
        holder = tenants_by_uid().get(owner)
        if holder is not None:
            return NamespaceClaim(
                "refused",
                NOT_OWNED_REASON,
                f"namespace {namespace} belongs to tenant {holder}; a tenant never takes "
                "another tenant's namespace",
            )
        if mark == tenant:
            return NamespaceClaim("adopt")
        left_by = (meta.get("labels") or {}).get(TENANT_LABEL) or "another tenant"
        return NamespaceClaim(
            "refused",
            NOT_OWNED_REASON,
            f"namespace {namespace} was left by a deleted tenant ({left_by}, uid {owner}) "
            f"and is not this tenant's (uid {uid}); {_how_to_hand_over(namespace, tenant)}",
        )
    if mark == tenant:
        return NamespaceClaim("adopt")
    if mark:
        return NamespaceClaim(
            "refused",
            NOT_OWNED_REASON,
            f"namespace {namespace} exists and is marked for tenant {mark} "
            f"({ADOPT_ANNOTATION}), not for this one",
        )
    return NamespaceClaim(
        "refused",
        NOT_OWNED_REASON,
        f"namespace {namespace} exists and was not created for this tenant; "
        f"{_how_to_hand_over(namespace, tenant)}",
    )
