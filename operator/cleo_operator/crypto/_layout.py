"""The Secret `data` layout shared by versioned keyrings (tenant data keys, sealing keys).

Why this layout: one JSON index entry says which versions exist, which one is active and
when each was made; the key material of each version sits in its own entry `v<N>.key` as
raw bytes. A Secret mounted as a volume then gives CleoAI one file per key, the index can be
read by people (`kubectl get secret -o yaml` shows no key bytes in it), and a missing or
extra key file is detected instead of silently dropping a version that old ciphertexts need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from cleo_operator.core.times import parse_rfc3339, rfc3339_precise
from cleo_operator.crypto._codec import KEY_ID_PATTERN
from cleo_operator.crypto.errors import InvalidKeyMaterial

__all__ = ["StoredKey", "dump_key_index", "key_entry_name", "load_key_index"]

_KEY_ENTRY = re.compile(r"v([0-9]+)\.key")


def key_entry_name(version: int) -> str:
    """The Secret data key holding the material of `version`."""
    return f"v{version}.key"


@dataclass(frozen=True)
class StoredKey:
    """One version as stored: the index fields and the key material."""

    version: int
    """Version number, from 1 up."""
    key_id: str
    """The id envelopes name."""
    created: datetime
    """When the version was generated (UTC)."""
    material: bytes = field(repr=False)
    """Raw key bytes; never in reprs."""


def dump_key_index(
    *, index_entry: str, format_tag: str, active: int, keys: Sequence[StoredKey]
) -> dict[str, bytes]:
    """Serialize versions to Secret data: a JSON index plus one raw entry per version."""
    index = {
        "format": format_tag,
        "active": active,
        "keys": [
            {"version": k.version, "id": k.key_id, "created": rfc3339_precise(k.created)}
            for k in sorted(keys, key=lambda k: k.version)
        ],
    }
    data = {index_entry: json.dumps(index, indent=2, sort_keys=True).encode("utf-8") + b"\n"}
    for k in keys:
        data[key_entry_name(k.version)] = k.material
    return data


def load_key_index(
    data: Mapping[str, bytes],
    *,
    index_entry: str,
    format_tag: str,
    key_size: int,
    what: str,
) -> tuple[int, list[StoredKey]]:
    """Parse Secret data written by `dump_key_index`; returns (active version, versions).

    Every problem is an InvalidKeyMaterial naming the Secret data entry and field.
    """
    raw_index = data.get(index_entry)
    if raw_index is None:
        raise InvalidKeyMaterial(
            f"the {what} Secret has no data[{index_entry!r}]: it is not a {what} Secret, or "
            "it was edited; restore it from a backup (never regenerate keys that encrypt data)"
        )
    index = _parse_json_object(raw_index, entry=index_entry, what=what)
    where = f"data[{index_entry!r}]"
    if index.get("format") != format_tag:
        raise InvalidKeyMaterial(
            f"{where}.format of the {what} Secret must be {format_tag!r}: this operator does "
            "not read this layout"
        )
    entries = index.get("keys")
    if not isinstance(entries, list) or not entries:
        raise InvalidKeyMaterial(f"{where}.keys of the {what} Secret must be a non-empty list")
    keys: list[StoredKey] = []
    for position, entry in enumerate(entries):
        keys.append(
            _parse_entry(
                data,
                entry,
                where=f"{where}.keys[{position}]",
                key_size=key_size,
                what=what,
            )
        )
    versions = [k.version for k in keys]
    if len(set(versions)) != len(versions):
        raise InvalidKeyMaterial(f"{where}.keys of the {what} Secret lists a version twice")
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise InvalidKeyMaterial(f"{where}.keys of the {what} Secret lists a key id twice")
    active = index.get("active")
    if not _is_int(active) or active not in versions:
        raise InvalidKeyMaterial(
            f"{where}.active of the {what} Secret must be one of the listed versions "
            f"{sorted(versions)}"
        )
    for name in data:
        match = _KEY_ENTRY.fullmatch(name)
        if match is not None and int(match.group(1)) not in versions:
            raise InvalidKeyMaterial(
                f"data[{name!r}] of the {what} Secret is not listed in {where}.keys: add it to "
                "the index or remove it (a key nobody lists cannot be rotated or audited)"
            )
    return active, sorted(keys, key=lambda k: k.version)


def _parse_json_object(raw: bytes, *, entry: str, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        # `from None`: the decoder error keeps the document, and the index sits next to keys.
        raise InvalidKeyMaterial(
            f"data[{entry!r}] of the {what} Secret is not valid UTF-8 JSON"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidKeyMaterial(f"data[{entry!r}] of the {what} Secret must be a JSON object")
    return parsed


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(
    data: Mapping[str, bytes], entry: object, *, where: str, key_size: int, what: str
) -> StoredKey:
    if not isinstance(entry, dict):
        raise InvalidKeyMaterial(f"{where} of the {what} Secret must be an object")
    version = entry.get("version")
    if not _is_int(version) or version < 1:
        raise InvalidKeyMaterial(f"{where}.version of the {what} Secret must be an integer >= 1")
    key_id = entry.get("id")
    if not isinstance(key_id, str) or KEY_ID_PATTERN.fullmatch(key_id) is None:
        raise InvalidKeyMaterial(f"{where}.id of the {what} Secret must be a valid key id")
    created_text = entry.get("created")
    try:
        if not isinstance(created_text, str):
            raise ValueError
        created = parse_rfc3339(created_text)
    except ValueError:
        raise InvalidKeyMaterial(
            f"{where}.created of the {what} Secret must be an RFC 3339 timestamp with a timezone"
        ) from None
    material_entry = key_entry_name(version)
    material = data.get(material_entry)
    if material is None:
        raise InvalidKeyMaterial(
            f"the {what} Secret lists version {version} but has no data[{material_entry!r}]; "
            "restore it from a backup: ciphertexts made with it cannot be read without it"
        )
    if len(material) != key_size:
        raise InvalidKeyMaterial(
            f"data[{material_entry!r}] of the {what} Secret must be {key_size} raw bytes, "
            f"found {len(material)}"
        )
    return StoredKey(version=version, key_id=key_id, created=created, material=bytes(material))
