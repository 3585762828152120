"""Sealing for the command line: the pieces `cleo-operator seal` and `kubectl cleo seal` share.

Why a module of its own: both commands read values the same way (literals, files, stdin),
refuse what the CleoTenant API would refuse before anything is sealed, find the cluster's
public key the same way, and must produce entries the API accepts. Kept once, below the
command groups (`.importlinter`), so the two cannot drift apart.

Nothing here prints, logs or raises a secret value: errors name keys, Secrets and files.
`check_sealed` reads only what a sealed value records in clear (its key id and its tenant,
Secret and key context); it never opens one. `reseal` does open values, with the operator's
private sealing keys, and hands the plaintext straight to `seal`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pydantic
import yaml

from cleo_operator.api.base import validate_tenant_name
from cleo_operator.api.errors import SpecError, spec_error_from_validation
from cleo_operator.api.tenant import DATA_KEY_HINT, DATA_KEY_PATTERN, SealedSecret
from cleo_operator.cli.common import CommandError
from cleo_operator.crypto import (
    CryptoError,
    Envelope,
    SealingKeyring,
    SealingPublicKey,
    seal,
    unseal,
)
from cleo_operator.crypto.sealing import sealing_context
from cleo_operator.kube.client import KubeError
from cleo_operator.reconcile.keys import OperatorKeys
from cleo_operator.render.meta import DEFAULT_OPERATOR_NAMESPACE

__all__ = [
    "OPERATOR_NAMESPACE_ENV",
    "SealCheck",
    "add_operator_namespace_option",
    "add_value_options",
    "check_sealed",
    "check_target",
    "cluster_public_key",
    "load_public_key",
    "read_values",
    "reseal",
    "sealed_entry",
    "sealed_entry_yaml",
    "split_pair",
]


OPERATOR_NAMESPACE_ENV: Final = "CLEO_OPERATOR_NAMESPACE"


def add_operator_namespace_option(parser: argparse.ArgumentParser) -> None:
    """`--operator-namespace`: where the operator's key Secrets and public key are."""
    parser.add_argument(
        "--operator-namespace",
        default=os.environ.get(OPERATOR_NAMESPACE_ENV, DEFAULT_OPERATOR_NAMESPACE),
        help=f"namespace of the operator's key Secrets (default: ${OPERATOR_NAMESPACE_ENV} "
        f"or {DEFAULT_OPERATOR_NAMESPACE})",
    )


def add_value_options(parser: argparse.ArgumentParser) -> None:
    """`--from-literal KEY=VALUE` and `--from-file [KEY=]PATH` (both repeatable)."""
    parser.add_argument(
        "--from-literal", action="append", metavar="KEY=VALUE", help="a value (repeatable)"
    )
    parser.add_argument(
        "--from-file",
        action="append",
        metavar="[KEY=]PATH",
        help="a value from a file, '-' for stdin; KEY defaults to the file name (repeatable)",
    )


def split_pair(text: str, *, option: str) -> tuple[str, str]:
    """KEY=VALUE into its two halves; the error never echoes the text (it may be a value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        # The text may be a secret value typed without KEY=: never echo it.
        raise CommandError(f"{option} takes KEY=VALUE (or KEY=PATH); one argument has no KEY=")
    return key, value


def _add(values: dict[str, bytes], key: str, value: bytes, *, option: str) -> None:
    if key in values:
        raise CommandError(f"key {key!r} is given twice ({option}); give each key once")
    values[key] = value


def read_values(
    *, literals: Iterable[str] = (), files: Iterable[str] = (), into: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    """Values from `--from-literal KEY=VALUE` and `--from-file [KEY=]PATH` ('-': stdin)."""
    values: dict[str, bytes] = {} if into is None else into
    for literal in literals:
        key, value = split_pair(literal, option="--from-literal")
        _add(values, key, value.encode("utf-8"), option="--from-literal")
    for item in files:
        key, sep, path_text = item.partition("=")
        if not sep:
            key, path_text = Path(item).name, item
        if path_text == "-":
            _add(values, key, sys.stdin.buffer.read(), option="--from-file")
            continue
        try:
            content = Path(path_text).read_bytes()
        except OSError as exc:
            raise CommandError(
                f"cannot read --from-file {path_text} for key {key!r}: {exc.strerror}"
            ) from None
        _add(values, key, content, option="--from-file")
    return values


def check_target(tenant: str, name: str, keys: Sequence[str]) -> None:
    """Refuse what the CleoTenant API would refuse, before anything is read or sealed."""
    try:
        validate_tenant_name(tenant)
    except SpecError as exc:
        raise CommandError(f"tenant {tenant!r}: {exc.issues[0].message}") from None
    if not keys:
        raise CommandError("nothing to seal: give --from-literal KEY=VALUE or --from-file KEY=PATH")
    problems = [
        f"key {key!r}: must be {DATA_KEY_HINT}, at most 253 long"
        for key in keys
        if len(key) > 253 or re.fullmatch(DATA_KEY_PATTERN, key) is None
    ]
    try:
        # Placeholders, not the values: validation errors must never carry secret input.
        SealedSecret.model_validate({"name": name, "data": dict.fromkeys(keys, "x")})
    except pydantic.ValidationError as exc:
        for issue in spec_error_from_validation("CleoTenant", exc, root="").issues:
            if issue.path == "name":
                problems.insert(0, f"--name {name!r}: {issue.message}")
            elif issue.path == "data" or not problems:
                problems.append(f"{issue.path}: {issue.message}")
    if problems:
        raise CommandError("; ".join(problems))


def load_public_key(path: Path) -> SealingPublicKey:
    """A public key from a file: PEM or the one-line `keys public` form."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read --public-key {path}: {exc}") from None
    try:
        if "BEGIN PUBLIC KEY" in text:
            return SealingPublicKey.from_pem(text)
        return SealingPublicKey.from_text(text)
    except ValueError as exc:
        raise CommandError(f"--public-key {path}: {exc}") from None


def cluster_public_key(keys: OperatorKeys) -> SealingPublicKey:
    """The cluster's current sealing public key: the published ConfigMap, else the Secret."""
    published = keys.sealing.published_public_key()
    if published is not None:
        return published
    # Not published (an operator version before the ConfigMap, or it was deleted): the
    # Secret works too, for callers allowed to read it.
    try:
        return keys.sealing.load().public_key
    except KubeError as exc:
        raise CommandError(
            f"the sealing public key is not published in ConfigMap {keys.operator_namespace}/"
            f"{keys.sealing.public_name} and the sealing key Secret cannot be read ({exc.reason})"
            ": start the operator (or run `cleo-operator keys init`), or pass --public-key FILE"
        ) from None


def sealed_entry(
    public: SealingPublicKey, *, tenant: str, name: str, values: Mapping[str, bytes]
) -> dict[str, Any]:
    """The `spec.secrets` entry for `values` (keys sorted), as the API accepts it."""
    entry = {
        "name": name,
        "data": {
            key: seal(public, tenant=tenant, secret=name, key=key, plaintext=value)
            for key, value in sorted(values.items())
        },
    }
    SealedSecret.model_validate(entry)  # what we hand out must be what the API accepts
    return entry


def sealed_entry_yaml(
    public: SealingPublicKey, *, tenant: str, name: str, values: Mapping[str, bytes]
) -> str:
    """The `spec.secrets` entry for `values`, as YAML with a comment saying what it is."""
    entry = sealed_entry(public, tenant=tenant, name=name, values=values)
    body = yaml.safe_dump([entry], sort_keys=False, width=1 << 30, default_flow_style=False)
    return (
        f"# spec.secrets entry of CleoTenant {tenant}: Secret {name}, sealed to "
        f"{public.key_id}\n{body}"
    )


@dataclass(frozen=True)
class SealCheck:
    """What one sealed value of a file records, against what its place in the file says."""

    secret: str
    key: str
    key_id: str | None
    """The key id the value was sealed to; None when the value is not an envelope at all."""
    ok: bool
    problem: str | None = None
    """Why not, naming what differs (never the value)."""


def check_sealed(
    public: SealingPublicKey, *, tenant: str, secret: str, key: str, text: str
) -> SealCheck:
    """Whether `text` is sealed to `public` for this tenant, Secret and key, without opening it."""
    context = sealing_context(tenant=tenant, secret=secret, key=key)
    try:
        envelope = Envelope.from_text(text)
    except CryptoError as exc:
        return SealCheck(secret, key, None, ok=False, problem=f"{exc.reason}: {exc}")
    try:
        envelope.check(kind="sealed", context=context)
    except CryptoError as exc:
        return SealCheck(secret, key, envelope.key_id, ok=False, problem=f"{exc.reason}: {exc}")
    if envelope.key_id != public.key_id:
        return SealCheck(
            secret,
            key,
            envelope.key_id,
            ok=False,
            problem=f"sealed to key {envelope.key_id}, but the cluster's current key is "
            f"{public.key_id}: seal it again (or re-seal the file after the rotation)",
        )
    return SealCheck(secret, key, envelope.key_id, ok=True)


def reseal(
    keyring: SealingKeyring, *, tenant: str, secret: str, key: str, text: str
) -> tuple[str, bool]:
    """`text` sealed to the keyring's current key; (new text, whether it changed).

    A value already sealed to the current key is kept as it is (a second run changes nothing).
    Raises `CryptoError` (wrong context, unknown key, tampered) naming the Secret's key.
    """
    current = keyring.public_key
    context = sealing_context(tenant=tenant, secret=secret, key=key)
    envelope = Envelope.from_text(text)
    if envelope.key_id == current.key_id:
        envelope.check(kind="sealed", context=context)
        return text, False
    plaintext = unseal(keyring, text, tenant=tenant, secret=secret, key=key)
    return seal(current, tenant=tenant, secret=secret, key=key, plaintext=plaintext), True
