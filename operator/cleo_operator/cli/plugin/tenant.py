"""Finding a tenant and its namespace as the person running the plugin can.

Why this is not simply "get the CleoTenant": CleoTenants are cluster-scoped, and a tenant's
admins and viewers hold roles in the tenant's namespace only, so they may not read their own
CleoTenant. They still may read what is in their namespace (its children, CleoBackups and
CleoFailovers), so the plugin goes on with `-n`, or with the default namespace `cleo-<name>`,
and says that the CleoTenant itself was not readable rather than pretending it is absent.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cleo_operator.api.objects import KubeObject
from cleo_operator.cli.common import Command, CommandError
from cleo_operator.cli.plugin.session import Forbidden, Session
from cleo_operator.cli.plugin.tree import Unreadable
from cleo_operator.kube.kinds import BACKUP, FAILOVER, TENANT
from cleo_operator.render.meta import default_namespace

__all__ = ["TenantPlace", "add_tenant_command", "find_tenant", "owned_by"]


@dataclass(frozen=True)
class TenantPlace:
    """The tenant (or why it could not be read) and the namespace its objects live in."""

    name: str
    tenant: KubeObject | Unreadable
    namespace: str


def _namespace_of(tenant: KubeObject) -> str:
    status = tenant.get("status") or {}
    spec = tenant.get("spec") or {}
    name = str(tenant["metadata"]["name"])
    return str(status.get("namespace") or spec.get("namespace") or default_namespace(name))


def find_tenant(session: Session, name: str, *, namespace: str | None) -> TenantPlace:
    """The tenant `name` and its namespace; `namespace` (-n) when the tenant is not readable.

    A tenant that does not exist is an error; one the caller may not read is not (its
    namespace may still be theirs to see). `-n` naming another namespace than the tenant's
    is an error that names both.
    """
    try:
        tenant = session.get(TENANT, name)
    except Forbidden as exc:
        return TenantPlace(
            name=name,
            tenant=Unreadable(TENANT, str(exc)),
            namespace=namespace or default_namespace(name),
        )
    if tenant is None:
        raise CommandError(f"CleoTenant {name} not found (kubectl get cleotenants lists them)")
    actual = _namespace_of(tenant)
    if namespace and namespace != actual:
        raise CommandError(
            f"CleoTenant {name} lives in namespace {actual}, not {namespace}: leave out -n, "
            f"or give -n {actual}"
        )
    return TenantPlace(name=name, tenant=tenant, namespace=actual)


def owned_by(objects: list[KubeObject], tenant: str) -> list[KubeObject]:
    """The CleoBackups or CleoFailovers of `tenant` among `objects` (by spec.tenant)."""
    return [obj for obj in objects if (obj.get("spec") or {}).get("tenant") == tenant]


def tenant_backups(session: Session, place: TenantPlace) -> list[KubeObject]:
    """The tenant's CleoBackups in its namespace, by name."""
    found = owned_by(session.list(BACKUP, namespace=place.namespace), place.name)
    return sorted(found, key=lambda obj: str(obj["metadata"]["name"]))


def tenant_failovers(session: Session, place: TenantPlace) -> list[KubeObject]:
    found = owned_by(session.list(FAILOVER, namespace=place.namespace), place.name)
    return sorted(found, key=lambda obj: str(obj["metadata"]["name"]))


def add_tenant_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
    *,
    name: str,
    text: str,
    command: Command,
) -> argparse.ArgumentParser:
    """A subcommand `NAME TENANT` with the common options, run by `command`."""
    parser = sub.add_parser(name, parents=parents, help=text, description=text)
    parser.add_argument("tenant", metavar="TENANT", help="the CleoTenant's name")
    parser.set_defaults(command=command)
    return parser
