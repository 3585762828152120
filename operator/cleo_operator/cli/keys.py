"""`cleo-operator keys ...` and `cleo-operator seal`: the operator's keys, for people.

- `keys init` creates the KEK Secret and the sealing keys once (the operator also does this
  on its first start) and publishes the sealing public key;
- `keys public [--pem]` prints the current sealing public key;
- `keys rotate-sealing` adds a sealing key (old ones stay, so everything sealed still opens);
- `keys rotate-kek` adds a KEK version and re-wraps every tenant keyring copy with it;
- `keys rewrap` re-wraps the copies still wrapped by an older KEK (after a crash of
  `rotate-kek`, or after the KMS added a version to a KEK directory);
- `keys status` shows versions and key ids, never keys;
- `keys adopt-quarantined --tenant T --secret NAME` makes a reviewed quarantine Secret (what
  a tenant keyring Secret held when the operator repaired it) the keyring's copy, for an
  operator namespace restored from an old backup (docs/encryption.md, Key recovery);
- `seal` encrypts values for one tenant's Secret and prints the `spec.secrets` entry.

Why the public key is read from a ConfigMap: people who seal values need no access to the
Secret that holds the private keys. `seal --public-key FILE` works with no cluster at all.

Nothing here prints or logs a secret value: `seal` reads values from arguments, files or
stdin and prints only sealed text; errors name keys and files, never values.

Every key command refuses an unknown `CLEO_FAULT_POINT` first (the crash tests kill these
processes at named steps; a typo would silently test nothing).
"""

from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path

from cleo_operator.api.base import validate_tenant_name
from cleo_operator.api.errors import SpecError
from cleo_operator.cli.common import (
    COMMAND_HELP,
    Command,
    CommandError,
    guarded,
    local_user,
    out,
)
from cleo_operator.cli.sealing import (
    add_operator_namespace_option,
    add_value_options,
    check_target,
    cluster_public_key,
    load_public_key,
    read_values,
    sealed_entry_yaml,
    split_pair,
)
from cleo_operator.crypto import CryptoError, Envelope
from cleo_operator.kube.access import whoami
from cleo_operator.kube.audit import set_operator_identity
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import (
    KEK_DIR_ENV,
    SecretKEKProvider,
    check_fault_point_env,
    kek_dir_from_environment,
    list_keyring_copies,
    list_secrets,
)
from cleo_operator.reconcile.keys import (
    KEYRING_COPY_SELECTOR,
    OperatorKeys,
    RewrapReport,
    adopt_quarantined,
    ensure_operator_keys,
    rewrap_keyring_copies,
    rotate_kek,
)
from cleo_operator.reconcile.keys.quarantine import (
    KIND_UNTRUSTED,
    QUARANTINE_KIND,
    QUARANTINE_REASON,
    QUARANTINE_SELECTOR,
    QUARANTINED_AT,
    QUARANTINED_FROM,
)
from cleo_operator.render.meta import TENANT_LABEL

__all__ = ["register"]

log = logging.getLogger("cleo_operator.keys")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _cluster_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_operator_namespace_option(common)
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument(
        "--kek-dir",
        type=Path,
        default=kek_dir_from_environment(),
        help=f"take the KEKs from this directory instead of the KEK Secret (default: "
        f"${KEK_DIR_ENV})",
    )
    return common


def _keys(args: argparse.Namespace) -> tuple[KubeClient, OperatorKeys]:
    kube = KubeClient.from_environment(context=args.context)
    # Keys created or rotated from here are audited with the command's user as the actor.
    set_operator_identity(whoami(kube) or local_user() or "")
    keys = OperatorKeys.locate(
        kube, operator_namespace=args.operator_namespace, kek_dir=args.kek_dir
    )
    return kube, keys


# -- keys ... ---------------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    kube = KubeClient.from_environment(context=args.context)
    set_operator_identity(whoami(kube) or local_user() or "")  # the actor of keys created
    keys = ensure_operator_keys(
        kube, operator_namespace=args.operator_namespace, kek_dir=args.kek_dir, now=_now()
    )
    public = keys.sealing.load().public_key
    out(public.to_text())
    return 0


def cmd_keys_public(args: argparse.Namespace) -> int:
    _, keys = _keys(args)
    public = cluster_public_key(keys)
    out(public.to_pem() if args.pem else public.to_text())
    return 0


def cmd_keys_rotate_sealing(args: argparse.Namespace) -> int:
    _, keys = _keys(args)
    keyring = keys.sealing.rotate(now=_now())
    log.info(
        "sealing key v%d (%s) is current; values sealed to older keys still open. Publish the "
        "new public key to the people who seal values",
        keyring.current_version,
        keyring.current.key_id,
    )
    out(keyring.public_key.to_text())
    return 0


def _report_rewrap(report: RewrapReport) -> None:
    out(
        f"KEK v{report.kek_version} is current: re-wrapped {len(report.rewrapped)} keyring "
        f"cop{'y' if len(report.rewrapped) == 1 else 'ies'}"
        + (f" ({', '.join(report.rewrapped)})" if report.rewrapped else "")
        + f", {len(report.current)} already current"
    )
    if report.failed:
        raise CommandError(
            "these keyring copies could not be re-wrapped and were left as they were: "
            + "; ".join(f"{tenant}: {why}" for tenant, why in report.failed)
        )


def cmd_keys_rotate_kek(args: argparse.Namespace) -> int:
    kube, keys = _keys(args)
    _report_rewrap(rotate_kek(kube, keys))  # a ValueError says what to do: exit 1
    return 0


def cmd_keys_rewrap(args: argparse.Namespace) -> int:
    kube, keys = _keys(args)
    _report_rewrap(rewrap_keyring_copies(kube, keys))
    return 0


def cmd_keys_adopt_quarantined(args: argparse.Namespace) -> int:
    kube, keys = _keys(args)
    # A reviewed Secret that does not qualify is a ValueError saying why: exit 1.
    _, line = adopt_quarantined(
        kube,
        keys,
        tenant=args.tenant,
        name=args.secret,
        replace_new_keyring=args.replace_new_keyring,
    )
    out(line)
    return 0


def cmd_keys_status(args: argparse.Namespace) -> int:
    kube, keys = _keys(args)
    kek = keys.kek.load()
    where = (
        f"Secret {keys.kek.where}"
        if isinstance(keys.kek, SecretKEKProvider)
        else f"directory {args.kek_dir}"
    )
    lines = [
        f"KEKs: {where}: versions {', '.join(f'v{v}' for v in kek.versions)}, "
        f"current v{kek.current_version}"
    ]
    sealing = keys.sealing.load()
    lines.append(
        f"sealing keys: Secret {keys.sealing.where}: current v{sealing.current_version} "
        f"({sealing.current.key_id}); all: "
        + ", ".join(f"v{k.version} {k.key_id}" for k in sealing.keys)
    )
    published = keys.sealing.published_public_key()
    state = "not published"
    if published is not None:
        state = published.key_id + (
            "" if published == sealing.public_key else " (STALE: run `keys init` to publish)"
        )
    lines.append(f"published public key: {state}")
    copies = list_keyring_copies(
        kube, operator_namespace=keys.operator_namespace, label_selector=KEYRING_COPY_SELECTOR
    )
    lines.append(f"tenant keyring copies: {len(copies)}")
    for copy in copies:
        try:
            kek_id = Envelope.from_text(copy.wrapped).key_id
        except CryptoError as exc:
            lines.append(f"  {copy.tenant}: unreadable ({exc.reason})")
            continue
        stale = "" if kek_id == f"v{kek.current_version}" else " (needs `keys rewrap`)"
        lines.append(f"  {copy.tenant}: wrapped by KEK {kek_id}{stale}")
    lines.extend(_quarantine_lines(kube, keys.operator_namespace))
    out("\n".join(lines))
    return 0


def _quarantine_lines(kube: KubeClient, operator_namespace: str) -> list[str]:
    """The keyring quarantine Secrets waiting for a person, and what to run for each: a
    tenant whose KeyringReady says TenantKeyringRepaired or UntrustedKeyringReplaced has
    one, and nothing else lists them."""
    kept = list_secrets(kube, namespace=operator_namespace, label_selector=QUARANTINE_SELECTOR)
    lines = [f"keyring quarantines to review: {len(kept)}"]
    for secret in kept:
        notes = secret.annotations
        tenant = secret.labels.get(TENANT_LABEL, "?")
        untrusted = notes.get(QUARANTINE_KIND) == KIND_UNTRUSTED
        lines.append(
            f"  {secret.name}: tenant {tenant}, from {notes.get(QUARANTINED_FROM, '?')} at "
            f"{notes.get(QUARANTINED_AT, '?')}"
            + (" (found before the tenant had keys)" if untrusted else "")
        )
        lines.append(f"    why: {notes.get(QUARANTINE_REASON, 'not recorded')}")
        lines.append(
            f"    adopt: cleo-operator keys adopt-quarantined --tenant {tenant} --secret "
            f"{secret.name}"
            + (" --replace-new-keyring" if untrusted else "")
            + f"; or, once reviewed: kubectl -n {operator_namespace} delete secret {secret.name}"
        )
    return lines


# -- seal -------------------------------------------------------------------------------------


def cmd_seal(args: argparse.Namespace) -> int:
    try:
        validate_tenant_name(args.tenant)
    except SpecError as exc:
        raise CommandError(f"--tenant {args.tenant!r}: {exc.issues[0].message}") from None
    keys_named = [split_pair(text, option="--from-literal")[0] for text in args.from_literal or ()]
    keys_named += [
        item.partition("=")[0] if "=" in item else Path(item).name for item in args.from_file or ()
    ]
    check_target(args.tenant, args.name, keys_named)
    if args.public_key is not None:
        public = load_public_key(args.public_key)
    else:
        _, keys = _keys(args)
        public = cluster_public_key(keys)
    values = read_values(literals=args.from_literal or (), files=args.from_file or ())
    out(sealed_entry_yaml(public, tenant=args.tenant, name=args.name, values=values))
    return 0


# -- wiring -----------------------------------------------------------------------------------


def _command(func: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        check_fault_point_env()
        return func(args)

    return guarded(run, log)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys` (with its subcommands) and `seal` to the `cleo-operator` parser."""
    common = _cluster_options()

    keys = subparsers.add_parser("keys", help=COMMAND_HELP["keys"])
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    commands: tuple[tuple[str, Command, str], ...] = (
        ("init", cmd_keys_init, "create the KEK and sealing keys if absent; print the public key"),
        ("rotate-sealing", cmd_keys_rotate_sealing, "add a sealing key; old ones keep working"),
        ("rotate-kek", cmd_keys_rotate_kek, "add a KEK version and re-wrap every keyring copy"),
        ("rewrap", cmd_keys_rewrap, "re-wrap keyring copies still wrapped by an older KEK"),
        ("status", cmd_keys_status, "show key versions and ids (never keys)"),
    )
    for name, func, text in commands:
        sub = keys_sub.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(func=_command(func))
    adopt_text = "make a reviewed keyring quarantine Secret the tenant keyring's copy"
    adopt = keys_sub.add_parser(
        "adopt-quarantined", parents=[common], help=adopt_text, description=adopt_text
    )
    adopt.add_argument("--tenant", required=True, help="the CleoTenant's name")
    adopt.add_argument(
        "--secret", required=True, help="the quarantine Secret in the operator namespace"
    )
    adopt.add_argument(
        "--replace-new-keyring",
        action="store_true",
        help="for a keyring found before the tenant had keys (UntrustedKeyringReplaced): "
        "replace the new keyring made then (it is kept in a quarantine Secret)",
    )
    adopt.set_defaults(func=_command(cmd_keys_adopt_quarantined))
    public = keys_sub.add_parser(
        "public", parents=[common], help="print the current sealing public key"
    )
    public.add_argument("--pem", action="store_true", help="PEM instead of the one-line form")
    public.set_defaults(func=_command(cmd_keys_public))

    seal_parser = subparsers.add_parser(
        "seal",
        parents=[common],
        help=COMMAND_HELP["seal"],
        description="Seal values for one Secret of one tenant and print the YAML entry for "
        "the CleoTenant's spec.secrets. Prefer --from-file over --from-literal: a literal "
        "stays in the shell history.",
    )
    seal_parser.add_argument("--tenant", required=True, help="the CleoTenant's name")
    seal_parser.add_argument("--name", required=True, help="the Secret's name")
    add_value_options(seal_parser)
    seal_parser.add_argument(
        "--public-key",
        type=Path,
        help="seal to this public key (PEM or the `keys public` line) instead of the cluster's",
    )
    seal_parser.set_defaults(func=_command(cmd_seal))
