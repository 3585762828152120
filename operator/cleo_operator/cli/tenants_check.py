"""`cleo-operator check-tenants`: which stored CleoTenants this release cannot read.

Why a command: an upgrade can type more strictly what an older release stored as is (the
autoscaling ``metrics`` and ``behavior`` were raw JSON before they were typed). The API
server does not re-validate what it already stores, so such a tenant shows up only after
the upgrade, as ``Ready=False`` with reason ``InvalidSpec``. This reads the tenants as
``kubectl get cleotenants -o json`` prints them (run it with the new release before
upgrading the operator) and validates each spec exactly as the operator will, naming every
field to fix. It reads standard input, not the cluster: any kubectl context works, and the
command needs no credentials of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from cleo_operator.cli.common import (
    COMMAND_HELP,
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    guarded,
    out,
)

__all__ = ["check_tenants", "register"]

log = logging.getLogger("cleo_operator")


def check_tenants(document: Any) -> list[tuple[str, str]]:
    """(name, what is wrong) of each CleoTenant of `document` (a kubectl List or one object)
    whose spec this release refuses, in the document's order."""
    from cleo_operator.api.errors import SpecError  # noqa: PLC0415 - keeps the CLI light
    from cleo_operator.api.tenant import KIND, parse_tenant_spec  # noqa: PLC0415

    if not isinstance(document, Mapping):
        raise CommandError("expected the JSON of `kubectl get cleotenants -o json`")
    items = document.get("items") if "items" in document else [document]
    if not isinstance(items, list):
        raise CommandError("expected the JSON of `kubectl get cleotenants -o json`")
    invalid = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("kind") not in (KIND, None):
            continue
        name = str((item.get("metadata") or {}).get("name", "?"))
        try:
            parse_tenant_spec(item.get("spec"))
        except SpecError as exc:
            invalid.append((name, str(exc)))
    return invalid


def _read(stream: TextIO) -> Any:
    try:
        return json.load(stream)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"the input is not JSON ({exc.msg}, line {exc.lineno}): pipe in "
            "`kubectl get cleotenants -o json`"
        ) from None


def cmd_check_tenants(args: argparse.Namespace) -> int:
    """Print each tenant this release refuses and why; exit 1 when there is one."""
    if args.file == "-":
        document = _read(sys.stdin)
    else:
        with open(args.file, encoding="utf-8") as stream:
            document = _read(stream)
    invalid = check_tenants(document)
    for name, problem in invalid:
        out(f"CleoTenant {name}: {problem}")
    if invalid:
        log.error("%d CleoTenant(s) this release cannot read: fix the fields named", len(invalid))
        return EXIT_FAILED
    log.info("every CleoTenant given is valid for this release")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cleo-operator check-tenants [-f FILE]` to the command line."""
    check = subparsers.add_parser(
        "check-tenants",
        help=COMMAND_HELP["check-tenants"],
        description="Reads `kubectl get cleotenants -o json` and validates every spec as "
        "this release's operator will; exits 1 if any is refused.",
    )
    check.add_argument(
        "-f", "--file", default="-", help="the JSON of the tenants (default: standard input)"
    )
    check.set_defaults(func=guarded(cmd_check_tenants, log))
