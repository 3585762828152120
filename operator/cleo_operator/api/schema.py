"""Validation declared once, next to the field, for both pydantic and the CRD.

A field's rule has two readers: pydantic, which checks specs inside the operator, and
the API server, which checks them at the door from the generated CRD. Each marker here
does both jobs, so the two cannot drift apart:

- `Matches`: a regular expression. pydantic checks it with Python's `re` (fullmatch) and
  a message for people; the CRD gets the same `pattern` (the expressions used are in
  the common subset of Python's `re` and Go's RE2).
- `ListMap` / `ListSet`: lists that server-side apply merges by key (or as a set). The
  API server refuses duplicate keys, so pydantic refuses them too.
- `KeysMatch`: map keys. Only pydantic checks them: a CEL rule over map keys with a
  regular expression costs (keys x request size) and the API server would refuse
  the CRD for exceeding the CEL cost budget. Bad keys that get past the API server
  become a condition (and the child object's own validation refuses them anyway).
- `Rules` / `validations` / `cel`: CEL rules (`x-kubernetes-validations`) on a field / on
  a model. The Python mirror of a rule is a model validator in the kind's module, raising
  `RuleViolation` so that both name the same field.
- `RawObject`: an opaque object passed through to a child that the API server keeps as
  is (`x-kubernetes-preserve-unknown-fields`). No spec field uses it today (the HPA's
  metrics and behavior are typed, api.autoscaling): an opaque field lets typos through.

A CEL message may contain ``{path}``: the CRD generator replaces it with the field's
path (e.g. ``spec.encryption.rotationPeriod``), so reusable types still name the field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import pydantic
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from cleo_operator.api.errors import RuleViolation

__all__ = [
    "CelRule",
    "Extra",
    "KeysMatch",
    "ListMap",
    "ListSet",
    "Matches",
    "RawObject",
    "Rules",
    "cel",
    "python_pattern",
    "validations",
]

PATH_PLACEHOLDER = "{path}"
"""Replaced in CEL messages by the path of the field that carries the rule."""


class CelRule(TypedDict):
    """One entry of ``x-kubernetes-validations``."""

    rule: str
    message: str
    fieldPath: NotRequired[str]
    reason: NotRequired[Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"]]


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"] | None = None,
) -> CelRule:
    """A CEL rule; ``field_path`` (e.g. ``.maxReplicas``) makes the API server blame that field."""
    entry = CelRule(rule=rule, message=message)
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: CelRule) -> dict[str, Any]:
    """``json_schema_extra`` for a model (in its ``model_config``) that carries CEL rules.

    Fields take `Rules` instead: rules from a field's type and from the field then add up,
    where ``json_schema_extra`` would replace one list with the other.
    """
    return {"x-kubernetes-validations": [dict(r) for r in rules]}


# eq=False (identity hash): markers inside `X | None` must be hashable, and rules are dicts.
@dataclasses.dataclass(frozen=True, init=False, eq=False)
class Rules:
    """CEL rules on a field (an ``Annotated`` marker); they add up with the type's rules."""

    rules: tuple[CelRule, ...]

    def __init__(self, *rules: CelRule) -> None:
        object.__setattr__(self, "rules", rules)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        existing = json_schema.setdefault("x-kubernetes-validations", [])
        existing.extend(dict(r) for r in self.rules)
        return json_schema


@dataclasses.dataclass(frozen=True, eq=False)
class Extra:
    """Schema keywords that only the CRD needs (e.g. ``format``); pydantic checks otherwise."""

    keywords: Mapping[str, Any]

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(self.keywords)
        return json_schema


_GO_CODE_POINT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def python_pattern(pattern: str) -> str:
    """`pattern` (as the API server's Go reads it) for Python's `re`: Go's ``\\x{2028}`` is
    Python's ``\\u2028``, written here as the character itself, which both read alike."""
    return _GO_CODE_POINT.sub(lambda m: re.escape(chr(int(m.group(1), 16))), pattern)


@dataclasses.dataclass(frozen=True)
class Matches:
    """A string must (fully) match ``pattern``; ``hint`` says in words what that means."""

    pattern: str
    hint: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        compiled = re.compile(python_pattern(self.pattern))
        hint = self.hint

        def check(value: str) -> str:
            if compiled.fullmatch(value) is None:
                raise ValueError(f"must be {hint}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


def _attribute_for(model: type[pydantic.BaseModel], api_name: str) -> str:
    for attribute, info in model.model_fields.items():
        if (info.alias or attribute) == api_name:
            return attribute
    raise LookupError(f"{model.__name__} has no field {api_name!r}")


@dataclasses.dataclass(frozen=True, init=False)
class ListMap:
    """A list of objects merged by ``keys`` (API names) under server-side apply."""

    keys: tuple[str, ...]

    def __init__(self, *keys: str) -> None:
        object.__setattr__(self, "keys", keys)

    def _check(self, items: Sequence[pydantic.BaseModel]) -> Sequence[pydantic.BaseModel]:
        seen: set[tuple[Any, ...]] = set()
        for index, item in enumerate(items):
            model = type(item)
            value = tuple(getattr(item, _attribute_for(model, key)) for key in self.keys)
            if value in seen:
                described = ", ".join(f"{k} {v!r}" for k, v in zip(self.keys, value, strict=True))
                raise RuleViolation(
                    (index, self.keys[-1]),
                    f"duplicate entry ({described}): entries are merged by "
                    f"{' and '.join(self.keys)}, so each must be unique",
                )
            seen.add(value)
        return items

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = "map"
        json_schema["x-kubernetes-list-map-keys"] = list(self.keys)
        return json_schema


@dataclasses.dataclass(frozen=True)
class ListSet:
    """A list of scalars without duplicates, merged as a set under server-side apply."""

    def _check(self, items: Sequence[Any]) -> Sequence[Any]:
        seen: set[Any] = set()
        for index, item in enumerate(items):
            if item in seen:
                raise RuleViolation(
                    (index,), f"duplicate value {item!r}: list items must be unique"
                )
            seen.add(item)
        return items

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = "set"
        return json_schema


@dataclasses.dataclass(frozen=True)
class KeysMatch:
    """Every key of a map must match ``pattern`` and be at most ``max_length`` long.

    Checked by pydantic only (see the module docstring for why not by CEL).
    """

    pattern: str
    hint: str
    max_length: int

    def _check(self, mapping: Mapping[str, Any]) -> Mapping[str, Any]:
        compiled = re.compile(self.pattern)
        for key in mapping:
            if len(key) > self.max_length or compiled.fullmatch(key) is None:
                raise RuleViolation(
                    (key,), f"invalid key: keys must be {self.hint}, at most {self.max_length} long"
                )
        return mapping

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))


RawObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""An object passed through untouched (its own API validates it when the child is applied)."""
