"""Editing `spec.secrets` of a CleoTenant manifest in place, keeping the rest of the file.

Why not load, change and dump the whole file: PyYAML (the package's only YAML library)
drops every comment and rewrites quoting and layout, and a CleoTenant file in a GitOps
repository is read and reviewed by people. So the file is parsed only to find where
`spec.secrets` is (PyYAML's node positions), and only that span of text is replaced with
the new list. Everything outside it stays byte for byte: comments, order, quoting, other
documents of a multi-document file.

What is lost, and only inside `spec.secrets`: comments between its entries (and one on its
last line), anchors and tags, and the original quoting of its names and values. Before the
file is written, the result is parsed again and must equal the old document with only
`spec.secrets` changed; otherwise nothing is written.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from cleo_operator.cli.common import CommandError

__all__ = ["TenantManifest", "read_secret_manifest", "replace_secrets", "write_in_place"]


@dataclass(frozen=True)
class TenantManifest:
    """A CleoTenant document found in a YAML text, and its `spec.secrets`."""

    text: str
    index: int
    """Which document of the stream it is."""
    body: dict[str, Any]
    name: str
    secrets: list[dict[str, Any]]


def _scalar_value(mapping: MappingNode, key: str) -> Node | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            found: Node = value_node
            return found
    return None


def _pair(mapping: MappingNode, key: str) -> tuple[Node, Node] | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _documents(text: str, where: str) -> tuple[list[Any], list[Node | None]]:
    try:
        bodies = list(yaml.safe_load_all(text))
        nodes: list[Node | None] = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise CommandError(f"{where} is not valid YAML: {exc}") from None
    return bodies, nodes


def find_tenant(text: str, *, where: str) -> TenantManifest:
    """The one CleoTenant document of `text`; an error naming `where` otherwise."""
    bodies, _ = _documents(text, where)
    found = [
        (i, body)
        for i, body in enumerate(bodies)
        if isinstance(body, dict) and body.get("kind") == "CleoTenant"
    ]
    if len(found) != 1:
        raise CommandError(
            f"{where} must hold exactly one CleoTenant document; it holds {len(found)}"
        )
    index, body = found[0]
    name = (body.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise CommandError(f"{where}: the CleoTenant has no metadata.name")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise CommandError(f"{where}: CleoTenant {name} has no spec mapping")
    secrets = spec.get("secrets") or []
    if not isinstance(secrets, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("data") or {}, dict)
        for entry in secrets
    ):
        raise CommandError(
            f"{where}: spec.secrets of CleoTenant {name} must be a list of {{name, data}} entries"
        )
    return TenantManifest(
        text=text, index=index, body=body, name=name, secrets=copy.deepcopy(secrets)
    )


def _end(node: Node) -> int:
    """Where the text of `node` ends (block collections: where their last scalar ends)."""
    if isinstance(node, ScalarNode) or not node.value or getattr(node, "flow_style", False):
        return int(node.end_mark.index)
    last = node.value[-1]
    return _end(last[1] if isinstance(node, MappingNode) else last)


def _line_end(text: str, index: int) -> int:
    if index > 0 and text[index - 1] == "\n":
        return index - 1  # a block scalar's end is the start of the next line
    found = text.find("\n", index)
    return len(text) if found < 0 else found


def _block(secrets: Sequence[Mapping[str, Any]], column: int) -> str:
    if not secrets:
        return "secrets: []"
    body = yaml.safe_dump(
        [dict(entry) for entry in secrets],
        sort_keys=False,
        default_flow_style=False,
        width=1 << 30,
    )
    pad = " " * column
    return "secrets:\n" + "".join(pad + line + "\n" for line in body.splitlines()).rstrip("\n")


def replace_secrets(
    manifest: TenantManifest, secrets: Sequence[Mapping[str, Any]], *, where: str
) -> str:
    """`manifest.text` with `spec.secrets` of its CleoTenant replaced by `secrets`."""
    text = manifest.text
    _, nodes = _documents(text, where)
    root = nodes[manifest.index]
    spec = _scalar_value(root, "spec") if isinstance(root, MappingNode) else None
    if not isinstance(spec, MappingNode) or spec.flow_style or not spec.value:
        raise CommandError(
            f"{where}: the CleoTenant's spec must be a block mapping (one key per line) to "
            "be edited in place"
        )
    pair = _pair(spec, "secrets")
    if pair is not None:
        key_node, value_node = pair
        start = int(key_node.start_mark.index)
        end = _line_end(text, _end(value_node))
        new = text[:start] + _block(secrets, key_node.start_mark.column) + text[end:]
    else:
        column = int(spec.value[0][0].start_mark.column)
        at = _line_end(text, _end(spec))
        new = text[:at] + "\n" + " " * column + _block(secrets, column) + text[at:]
    _check_only_secrets_changed(manifest, new, secrets, where=where)
    return new


def _check_only_secrets_changed(
    manifest: TenantManifest, new: str, secrets: Sequence[Mapping[str, Any]], *, where: str
) -> None:
    bodies, _ = _documents(new, where)
    old_bodies, _ = _documents(manifest.text, where)
    expected = copy.deepcopy(manifest.body)
    expected["spec"]["secrets"] = [dict(entry) for entry in secrets]
    old_bodies[manifest.index] = expected
    if bodies != old_bodies:
        raise CommandError(
            f"{where}: editing spec.secrets in place would change more than spec.secrets "
            "(an unusual layout); nothing was written"
        )


def write_in_place(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (a crash leaves the old file or the new one)."""
    mode = path.stat().st_mode & 0o7777
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_secret_manifest(text: str, *, where: str) -> tuple[str, dict[str, bytes]]:
    """The name and values of a Secret manifest (`data` base64, `stringData` text).

    Errors name the manifest and the key, never a value.
    """
    import base64  # noqa: PLC0415
    import binascii  # noqa: PLC0415

    bodies, _ = _documents(text, where)
    secrets = [b for b in bodies if isinstance(b, dict) and b.get("kind") == "Secret"]
    if len(secrets) != 1:
        raise CommandError(f"{where} must hold exactly one Secret; it holds {len(secrets)}")
    secret = secrets[0]
    name = (secret.get("metadata") or {}).get("name")
    values: dict[str, bytes] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise CommandError(f"{where}: data.{key} is not base64") from None
    for key, value in (secret.get("stringData") or {}).items():
        # stringData wins over data, as the API server merges them.
        values[str(key)] = str(value).encode("utf-8")
    return (str(name) if name else ""), values
