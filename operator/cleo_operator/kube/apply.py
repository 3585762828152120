"""Deciding whether a child needs a write, so that a no-op reconcile writes nothing.

Server-side apply is idempotent, but every apply is still a write request. Before applying,
the reconciler asks `needs_apply(desired, live)`:
- the desired object's hash is recorded in the annotation `cleoai.io/applied-hash`; a
  different hash means the spec changed (this also catches fields we stopped setting,
  which a subset check cannot see);
- otherwise the live object must still contain every field we want (a subset check), so a
  child edited by hand is put back. Quantities are compared by value, because the API
  server canonicalizes them ("1000m" comes back as "1").
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from cleo_operator.api.objects import KubeObject

HASH_ANNOTATION: Final = "cleoai.io/applied-hash"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
_SUFFIX: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal | None:
    """The value of a Kubernetes quantity, or None when `value` is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value)
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError):
        return None


def object_hash(obj: Mapping[str, Any]) -> str:
    """A stable hash of an object as we would apply it (without the hash annotation).

    A Secret's values are left out: the annotation is readable by anyone who can read the
    object's metadata, and an unsalted hash of a low-entropy value gives it away. A change
    of a Secret's values is still caught, by the subset check of `needs_apply`.
    """
    clean = copy.deepcopy(dict(obj))
    if clean.get("kind") == "Secret" and clean.get("apiVersion") == "v1":
        clean.pop("data", None)
        clean.pop("stringData", None)
    meta = clean.get("metadata", {})
    annotations = meta.get("annotations")
    if annotations is not None:
        annotations.pop(HASH_ANNOTATION, None)
        if not annotations:
            del meta["annotations"]  # stamping an object twice must not change its hash
    canonical = json.dumps(clean, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_hash(obj: KubeObject) -> KubeObject:
    """Return `obj` with its hash recorded in the `cleoai.io/applied-hash` annotation."""
    stamped = copy.deepcopy(obj)
    stamped.setdefault("metadata", {}).setdefault("annotations", {})[HASH_ANNOTATION] = object_hash(
        obj
    )
    return stamped


def _contains(want: object, have: object) -> bool:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return False
        return all(k in have and _contains(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(_contains(w, h) for w, h in zip(want, have, strict=True))
    if want == have:
        return True
    # Quantities and numbers the API server rewrote into their canonical form.
    a, b = parse_quantity(want), parse_quantity(have)
    return a is not None and a == b


def needs_apply(desired: KubeObject, live: KubeObject | None) -> bool:
    """True when `live` is missing, was applied from another spec, or drifted from `desired`.

    `desired` must carry its hash (see `with_hash`).
    """
    if live is None:
        return True
    want_hash = desired.get("metadata", {}).get("annotations", {}).get(HASH_ANNOTATION)
    have_hash = (live.get("metadata") or {}).get("annotations", {}).get(HASH_ANNOTATION)
    if want_hash != have_hash:
        return True
    return not _contains(desired, live)
