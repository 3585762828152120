"""What the CRD generator needs to know about a kind besides its spec and status models.

Each kind module (tenant, backup, failover) declares one `ResourceDefinition`; the CRD
generator and the handlers (group, version, plural) read the same object, so a kind's
names are written down once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import pydantic

from cleo_operator.api.base import (
    CATEGORY,
    DNS_LABEL_HINT,
    DNS_LABEL_PATTERN,
    GROUP,
    VERSION,
    SpecModel,
    StatusBase,
    validate_object_name,
)
from cleo_operator.api.errors import SpecError, SpecIssue, spec_error_from_validation
from cleo_operator.api.schema import CelRule, cel

__all__ = ["PrinterColumn", "ResourceDefinition", "parse_spec"]

SpecT = TypeVar("SpecT", bound=SpecModel)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrinterColumn:
    """A column of ``kubectl get``."""

    name: str
    """The column header."""

    type: Literal["string", "integer", "number", "boolean", "date"]
    """How kubectl formats the value (``date`` prints an age such as 5m)."""

    json_path: str
    """Where the value is, e.g. ``.status.phase``."""

    description: str
    """Shown by ``kubectl explain`` and in API discovery."""

    priority: int = 0
    """0 shows the column always, higher only with ``kubectl get -o wide``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceDefinition:
    """One kind of the cleoai.io API, as the CRD and the handlers see it."""

    kind: str
    """The kind, e.g. CleoTenant."""

    plural: str
    """The resource name in URLs and kubectl, e.g. cleotenants."""

    singular: str
    """The singular name for kubectl, e.g. cleotenant."""

    short_names: tuple[str, ...]
    """Abbreviations for kubectl, e.g. ct."""

    scope: Literal["Cluster", "Namespaced"]
    """Whether objects live in a namespace."""

    description: str
    """What the kind is, for ``kubectl explain`` (the top of the schema)."""

    spec_model: type[SpecModel]

    status_model: type[StatusBase]

    printer_columns: tuple[PrinterColumn, ...]
    """The columns of ``kubectl get``, in order."""

    name_max_length: int
    """Longest ``metadata.name``; names must also be DNS labels (they name children)."""

    name_reason: str
    """Why names are limited so, for the error message."""

    object_rules: tuple[CelRule, ...] = ()
    """More CEL rules on the whole object (rules on ``metadata.name`` can only go there)."""

    categories: tuple[str, ...] = (CATEGORY,)
    """Groups for ``kubectl get <category>``."""

    group: str = GROUP
    """The API group."""

    version: str = VERSION
    """The one served and stored version."""

    @property
    def api_version(self) -> str:
        """``group/version`` as objects carry it."""
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name, e.g. cleotenants.cleoai.io."""
        return f"{self.plural}.{self.group}"

    def name_rules(self) -> tuple[CelRule, ...]:
        """The CEL rules on ``metadata.name`` (the API server only checks it is a subdomain)."""
        return (
            cel(
                f"self.metadata.name.size() <= {self.name_max_length}",
                f"metadata.name of a {self.kind} must be at most {self.name_max_length} "
                f"characters ({self.name_reason})",
            ),
            cel(
                f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
                f"metadata.name of a {self.kind} must be {DNS_LABEL_HINT}",
            ),
        )

    def validate_name(self, name: str) -> None:
        """Refuse a name that `name_rules` refuse (`SpecError` on ``metadata.name``)."""
        validate_object_name(self.kind, name, max_length=self.name_max_length)


def parse_spec(model: type[SpecT], kind: str, body_spec: Mapping[str, Any] | None) -> SpecT:
    """Validate a resource's raw ``.spec`` (camelCase, as the API serves it) into ``model``.

    Raises `SpecError` naming each bad field as ``spec.<camelCase path>``, and `SpecError` on
    ``spec`` for any other exception a validator raises (a spec never crashes a reconcile).
    Only the API's
    camelCase names are accepted here (not the Python attribute names), as in the CRD.
    """
    if body_spec is None:
        raise SpecError(kind, [SpecIssue("spec", "is required")])
    try:
        return model.model_validate(body_spec, by_alias=True, by_name=False)
    except pydantic.ValidationError as error:
        # `from None`: the ValidationError's text carries input values (see api.errors).
        raise spec_error_from_validation(kind, error) from None
    except Exception as error:  # any failure of a validator is bad input
        # A validator that fails with anything but ValueError/AssertionError escapes pydantic
        # without a location (Decimal's InvalidOperation did). Every caller catches SpecError
        # only: anything else would crash each reconcile and block the finalizer. The text
        # of the exception may quote the input, so only its type is named.
        raise SpecError(
            kind,
            [
                SpecIssue(
                    "spec", f"could not be validated ({type(error).__name__}); check its values"
                )
            ],
        ) from None
