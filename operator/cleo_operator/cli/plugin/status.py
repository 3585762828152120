"""`kubectl cleo status TENANT`: what the tenant has, and what of it is not working.

Reads the CleoTenant, its namespace, every kind the operator makes for a tenant
(`kube.kinds.TENANT_CHILDREN`, found by the tenant's labels in its namespace) and the
tenant's CleoBackups and CleoFailovers, then draws the tree (`tree`). Each read that is
refused becomes a row that says so; when every read is refused, the caller has no business
with this tenant, and the command fails with the refusals instead of an empty tree.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence

from cleo_operator.api.objects import KubeObject
from cleo_operator.cli.common import CommandError
from cleo_operator.cli.plugin.output import Display
from cleo_operator.cli.plugin.session import Forbidden, Session
from cleo_operator.cli.plugin.tenant import find_tenant, owned_by
from cleo_operator.cli.plugin.tree import Unreadable, build_tree, tree_table
from cleo_operator.kube.kinds import BACKUP, FAILOVER, NAMESPACE, TENANT_CHILDREN, Kind
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL

__all__ = ["HELP", "cmd_status", "gather_children"]

HELP = "the tenant's tree: its conditions, namespace, children, backups and failovers"


def tenant_selector(tenant: str) -> str:
    """The labels the operator puts on every child of `tenant` (render.meta.tenant_labels)."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={tenant}"


def gather_children(
    session: Session, *, tenant: str, namespace: str
) -> dict[Kind, Sequence[KubeObject] | Unreadable]:
    """Per kind, the tenant's objects in its namespace, or why they could not be read."""
    found: dict[Kind, Sequence[KubeObject] | Unreadable] = {}
    selector = tenant_selector(tenant)
    for kind in (*TENANT_CHILDREN, BACKUP, FAILOVER):
        if not kind.namespaced:
            continue  # the Namespace is the tree's own level
        try:
            if kind in (BACKUP, FAILOVER):
                # Made by people, not the operator: they name their tenant in spec.tenant.
                found[kind] = owned_by(session.list(kind, namespace=namespace), tenant)
            else:
                found[kind] = session.list(kind, namespace=namespace, label_selector=selector)
        except Forbidden as exc:
            found[kind] = Unreadable(kind, str(exc))
    return found


def cmd_status(args: argparse.Namespace) -> int:
    session: Session = args.connect()
    display: Display = args.display
    place = find_tenant(session, args.tenant, namespace=args.namespace)
    namespace: KubeObject | Unreadable | None
    try:
        namespace = session.get(NAMESPACE, place.namespace)
    except Forbidden as exc:
        namespace = Unreadable(NAMESPACE, str(exc))
    children = gather_children(session, tenant=place.name, namespace=place.namespace)
    refused = [
        found
        for found in (place.tenant, namespace, *children.values())
        if isinstance(found, Unreadable)
    ]
    if len(refused) == 2 + len(children):
        # Nothing at all was readable: not the caller's tenant. Say what was refused.
        raise CommandError(
            f"nothing of tenant {place.name} is yours to see: {refused[0].why}, and you may "
            f"not read its objects in namespace {place.namespace}"
        )
    root = build_tree(
        tenant_name=place.name,
        tenant=place.tenant,
        namespace_name=place.namespace,
        namespace=namespace,
        children=children,
    )
    now = datetime.datetime.now(datetime.UTC)
    display.show({"tenant": root.to_data()}, tree_table(root, now=now))
    return 0
