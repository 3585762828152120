"""`kubectl cleo seal FILE`: sealed secrets of a CleoTenant file, merged, re-sealed or checked.

- `seal FILE --secret SECRET.yaml` (or `-` for stdin), or `--from-literal K=V` /
  `--from-file K=PATH` with `--name`: seals the values to the cluster's public key (or
  `--public-key`) for the file's tenant and merges them into its `spec.secrets` in place:
  the Secret's entry gains or replaces those keys and keeps its others (`manifest` says
  what of the file is kept: all of it outside `spec.secrets`).
- `seal FILE --check`: every sealed value of the file against the cluster's public key,
  without opening any: sealed to the current key, and for this tenant, Secret and key (a
  value copied from another tenant's file names the mismatch). Exit 1 when one fails.
- `seal FILE --reseal`: after `cleo-operator keys rotate-sealing`, every value sealed to an
  older key is opened and sealed again to the current one. This needs the operator's
  private sealing keys (the Secret in the operator's namespace, `cleo-operator keys` reads
  it the same way): for platform admins only; anyone else gets the one-line refusal and
  must seal the values again from their source.

Values come from arguments, files or stdin and leave only sealed; nothing prints or logs a
value, and the results name Secrets, keys and key ids only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from cleo_operator.cli.common import CommandError
from cleo_operator.cli.plugin.manifest import (
    TenantManifest,
    find_tenant,
    read_secret_manifest,
    replace_secrets,
    write_in_place,
)
from cleo_operator.cli.plugin.output import Display, Table
from cleo_operator.cli.plugin.session import Forbidden, Session
from cleo_operator.cli.sealing import (
    add_operator_namespace_option,
    add_value_options,
    check_sealed,
    check_target,
    cluster_public_key,
    load_public_key,
    read_values,
    reseal,
    sealed_entry,
)
from cleo_operator.crypto import CryptoError, Envelope, SealingPublicKey
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import SECRET
from cleo_operator.reconcile.keys import OperatorKeys

__all__ = ["cmd_seal", "merge_entry", "register"]

STDIN: Final = "-"


def _read_file(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None


def _operator_keys(args: argparse.Namespace) -> OperatorKeys:
    session: Session = args.connect()
    return OperatorKeys.locate(
        session.kube, operator_namespace=args.operator_namespace, kek_dir=None
    )


def _public_key(args: argparse.Namespace) -> SealingPublicKey:
    if args.public_key is not None:
        return load_public_key(args.public_key)
    keys = _operator_keys(args)
    try:
        return cluster_public_key(keys)
    except KubeError as exc:
        raise CommandError(
            f"cannot read the sealing public key in namespace {keys.operator_namespace} "
            f"({exc.status} {exc.reason}): pass --public-key FILE (from `cleo-operator keys "
            "public`)"
        ) from None


def merge_entry(
    secrets: list[dict[str, Any]], entry: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """`secrets` with `entry` merged in: its keys added to (or replacing those of) the entry
    of the same name, or the entry appended. Returns the list and, per key, what happened."""
    merged = [dict(item) for item in secrets]
    actions: dict[str, str] = {}
    for item in merged:
        if item.get("name") == entry["name"]:
            data = dict(item.get("data") or {})
            for key, value in entry["data"].items():
                actions[key] = "replaced" if key in data else "added"
                data[key] = value
            item["data"] = data
            return merged, actions
    merged.append(entry)
    return merged, dict.fromkeys(entry["data"], "added")


def _values(args: argparse.Namespace) -> tuple[str, dict[str, bytes]]:
    name = args.name or ""
    values: dict[str, bytes] = {}
    if args.secret == STDIN and any(
        item.rpartition("=")[2] == STDIN for item in args.from_file or ()
    ):
        raise CommandError("stdin can be read once: give --secret - or --from-file KEY=-, not both")
    if args.secret is not None:
        from_stdin = args.secret == STDIN
        where = "stdin" if from_stdin else args.secret
        text = sys.stdin.read() if from_stdin else _read_file(Path(args.secret))
        manifest_name, values = read_secret_manifest(text, where=where)
        name = name or manifest_name
    values = read_values(literals=args.from_literal or (), files=args.from_file or (), into=values)
    if not name:
        raise CommandError("name the Secret: --name NAME (or a Secret manifest's metadata.name)")
    return name, values


def _seal_into(args: argparse.Namespace, manifest: TenantManifest) -> int:
    display: Display = args.display
    name, values = _values(args)
    check_target(manifest.name, name, sorted(values))
    public = _public_key(args)
    entry = sealed_entry(public, tenant=manifest.name, name=name, values=values)
    merged, actions = merge_entry(manifest.secrets, entry)
    text = replace_secrets(manifest, merged, where=str(args.file))
    write_in_place(args.file, text)
    rows = [
        {"secret": name, "key": key, "keyId": public.key_id, "action": actions[key]}
        for key in sorted(actions)
    ]
    table = Table(columns=("secret", "key", "key id", "action"))
    for row in rows:
        table.add(row["secret"], row["key"], row["keyId"], row["action"])
    display.show({"file": str(args.file), "tenant": manifest.name, "sealed": rows}, table)
    return 0


def _entries(manifest: TenantManifest) -> list[tuple[str, str, str]]:
    return [
        (str(entry["name"]), str(key), str(value))
        for entry in manifest.secrets
        for key, value in (entry.get("data") or {}).items()
    ]


def _check(args: argparse.Namespace, manifest: TenantManifest) -> int:
    display: Display = args.display
    public = _public_key(args)
    results = [
        check_sealed(public, tenant=manifest.name, secret=secret, key=key, text=text)
        for secret, key, text in _entries(manifest)
    ]
    table = Table(columns=("secret", "key", "key id", "ok", "problem"))
    rows = []
    for result in results:
        table.add(
            result.secret,
            result.key,
            result.key_id,
            "yes" if result.ok else "NO",
            result.problem,
            bad=not result.ok,
        )
        row: dict[str, Any] = {
            "secret": result.secret,
            "key": result.key,
            "keyId": result.key_id,
            "ok": result.ok,
        }
        if result.problem:
            row["problem"] = result.problem
        rows.append(row)
    display.show(
        {"file": str(args.file), "tenant": manifest.name, "keyId": public.key_id, "values": rows},
        table,
    )
    failed = [r for r in results if not r.ok]
    if failed:
        raise CommandError(
            f"{len(failed)} of {len(results)} sealed values of {args.file} do not fit CleoTenant "
            f"{manifest.name} and key {public.key_id}: "
            + ", ".join(f"{r.secret}/{r.key} ({(r.problem or '').split(':')[0]})" for r in failed)
        )
    return 0


def _reseal(args: argparse.Namespace, manifest: TenantManifest) -> int:
    display: Display = args.display
    keys = _operator_keys(args)
    try:
        keyring = keys.sealing.load()
    except KubeError as exc:
        if exc.status == 403:
            raise CommandError(
                f"{Forbidden(verb='get', kind=SECRET, namespace=keys.operator_namespace)}: "
                "re-sealing opens values with the operator's private sealing keys, which "
                "only platform admins may read; ask one, or seal the values again from their "
                "source with `kubectl cleo seal`"
            ) from None
        raise
    secrets = [dict(entry) for entry in manifest.secrets]
    table = Table(columns=("secret", "key", "from key id", "to key id", "changed"))
    rows = []
    problems = []
    for entry in secrets:
        data = dict(entry.get("data") or {})
        for key, text in data.items():
            try:
                new, changed = reseal(
                    keyring, tenant=manifest.name, secret=entry["name"], key=key, text=str(text)
                )
            except CryptoError as exc:
                problems.append(f"{entry['name']}/{key}: {exc.reason}: {exc}")
                continue
            data[key] = new
            from_id = _key_id(str(text))
            rows.append(
                {
                    "secret": entry["name"],
                    "key": key,
                    "fromKeyId": from_id,
                    "toKeyId": keyring.public_key.key_id,
                    "changed": changed,
                }
            )
            table.add(
                entry["name"], key, from_id, keyring.public_key.key_id, "yes" if changed else "no"
            )
        entry["data"] = data
    if problems:
        raise CommandError(
            f"nothing was written: {len(problems)} values of {args.file} cannot be re-sealed: "
            + "; ".join(problems[:3])
        )
    if any(row["changed"] for row in rows):
        write_in_place(args.file, replace_secrets(manifest, secrets, where=str(args.file)))
    display.show({"file": str(args.file), "tenant": manifest.name, "resealed": rows}, table)
    return 0


def _key_id(text: str) -> str:
    return Envelope.from_text(text).key_id


def cmd_seal(args: argparse.Namespace) -> int:
    if args.check and args.reseal:
        raise CommandError("--check and --reseal are two commands: give one")
    gives_values = args.secret is not None or args.from_literal or args.from_file
    if (args.check or args.reseal) and gives_values:
        raise CommandError("--check and --reseal read the file only: leave out the values")
    manifest = find_tenant(_read_file(args.file), where=str(args.file))
    if args.check:
        return _check(args, manifest)
    if args.reseal:
        return _reseal(args, manifest)
    if not gives_values:
        raise CommandError(
            "nothing to seal: give --secret FILE (a Secret manifest, '-' for stdin), "
            "--from-literal KEY=VALUE or --from-file KEY=PATH; or --check, or --reseal"
        )
    return _seal_into(args, manifest)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    text = "seal values into a CleoTenant file in place; --check or --reseal its sealed values"
    parser = sub.add_parser(
        "seal",
        parents=parents,
        help=text,
        description=text + ". Prefer --secret or --from-file over --from-literal: a literal "
        "stays in the shell history.",
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="the CleoTenant manifest to edit")
    parser.add_argument("--secret", metavar="FILE", help="a Secret manifest ('-': stdin)")
    parser.add_argument("--name", help="the Secret's name (default: the manifest's)")
    add_value_options(parser)
    parser.add_argument(
        "--public-key",
        type=Path,
        help="seal or check with this public key (PEM or `cleo-operator keys public`) instead "
        "of the cluster's",
    )
    parser.add_argument("--check", action="store_true", help="check the file's sealed values")
    parser.add_argument(
        "--reseal", action="store_true", help="re-seal values sealed to older keys (admins)"
    )
    add_operator_namespace_option(parser)
    parser.set_defaults(command=cmd_seal)
    return parser
