"""The bottom layer: one error base, one RFC 3339 reader, the named kinds."""

from __future__ import annotations

import datetime
import importlib
import inspect
import pkgutil

import pytest

import cleo_operator
from cleo_operator.core.errors import CleoError
from cleo_operator.core.times import (
    parse_rfc3339,
    read_rfc3339,
    rfc3339,
    rfc3339_ms,
    rfc3339_precise,
)
from cleo_operator.handlers.registry import CHILD_RESOURCES
from cleo_operator.kube import kinds
from cleo_operator.kube.client import KubeError

T = datetime.datetime(2026, 3, 1, 12, 0, 5, 123456, tzinfo=datetime.UTC)
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


def test_writers_write_utc_with_a_z_at_their_precision() -> None:
    assert rfc3339(T) == "2026-03-01T12:00:05Z"
    assert rfc3339_ms(T) == "2026-03-01T12:00:05.123Z"
    assert rfc3339_precise(T) == "2026-03-01T12:00:05.123456Z"
    assert rfc3339(T.astimezone(PLUS_TWO)) == "2026-03-01T12:00:05Z"
    for write in (rfc3339, rfc3339_ms, rfc3339_precise):
        with pytest.raises(ValueError, match="time zone"):
            write(T.replace(tzinfo=None))


def test_the_reader_reads_what_every_writer_wrote() -> None:
    assert parse_rfc3339(rfc3339_precise(T)) == T
    assert parse_rfc3339(rfc3339_ms(T)) == T.replace(microsecond=123000)
    assert parse_rfc3339(rfc3339(T)) == T.replace(microsecond=0)
    assert parse_rfc3339("2026-03-01T14:00:05+02:00") == T.replace(microsecond=0)
    assert parse_rfc3339("2026-03-01T14:00:05+02:00").tzinfo == datetime.UTC


@pytest.mark.parametrize("text", ["2026-03-01T12:00:05", "yesterday", "", "2026-13-01T00:00:00Z"])
def test_a_malformed_or_zoneless_time_is_refused_or_absent(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|timezone"):
        parse_rfc3339(text)
    assert read_rfc3339(text) is None


@pytest.mark.parametrize("value", [None, 3, ["2026-03-01T12:00:05Z"]])
def test_read_takes_anything_status_may_hold(value: object) -> None:
    assert read_rfc3339(value) is None


def test_the_error_base_gives_a_safe_message() -> None:
    error = CleoError("connecting with password=hunter22 failed " + "x" * 2000)
    assert error.reason == "Error"
    assert error.retryable
    assert "hunter22" not in error.safe_message
    assert len(error.safe_message) <= 1024
    assert "hunter22" in error.message  # the message itself is the caller's, unchanged


@pytest.mark.parametrize(
    ("status", "transient"),
    [(0, True), (409, True), (429, True), (500, True), (503, True), (504, True),
     (400, False), (401, False), (403, False), (404, False), (410, False), (422, False)],
)  # fmt: skip
def test_kube_error_says_whether_it_is_transient(status: int, transient: bool) -> None:
    error = KubeError(status=status, reason="R", message="m", what="get Secret a/b")
    assert error.transient is transient
    assert error.retryable is transient
    assert str(error) == f"get Secret a/b: {status} R: m"
    assert error.message == "m"


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(cleo_operator.__path__, "cleo_operator."):
        if info.name.startswith("cleo_operator.handlers") or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Exception)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = obj
    return list(found.values())


def test_every_error_the_package_raises_on_purpose_derives_from_the_base() -> None:
    classes = _error_classes()
    assert len(classes) > 20
    outside = sorted(c.__qualname__ for c in classes if not issubclass(c, CleoError))
    assert outside == []


def test_the_watched_child_kinds_are_derived_from_the_named_kinds() -> None:
    assert {(k.group, k.version, k.plural) for k in kinds.TENANT_CHILDREN} == set(CHILD_RESOURCES)
    assert kinds.SECRET not in kinds.TENANT_CHILDREN  # why: see handlers/registry.py
    named = {v for k, v in vars(kinds).items() if isinstance(v, kinds.Kind) and k.isupper()}
    assert named == set(kinds.KINDS.values())
    assert kinds.kind_of({"apiVersion": "v1", "kind": "Secret"}) is kinds.SECRET
    assert kinds.SECRET.path(namespace="a", name="b") == "/api/v1/namespaces/a/secrets/b"
    assert kinds.TENANT.path(namespace="ignored") == "/apis/cleoai.io/v1alpha1/cleotenants"
    with pytest.raises(ValueError, match="does not manage"):
        kinds.kind_of({"apiVersion": "v1", "kind": "Node"})
