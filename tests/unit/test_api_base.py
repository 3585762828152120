"""Shared API types: conditions, durations, quantities, names and spec errors."""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleo_operator.api.base import (
    Condition,
    Duration,
    IntOrPercent,
    PositiveDuration,
    Quantity,
    SpecModel,
    Timestamp,
    get_condition,
    is_condition_true,
    parse_duration,
    rfc3339,
    set_condition,
    validate_tenant_name,
)
from cleo_operator.api.errors import SpecError, format_path, spec_error_from_validation

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def ready(status: Any, reason: str = "Reconciled", *, at: datetime.datetime = T0) -> Any:
    return lambda conditions: set_condition(
        conditions,
        type="Ready",
        status=status,
        reason=reason,
        message=f"{reason} message",
        observed_generation=3,
        now=at,
    )


# --- conditions ---------------------------------------------------------------------------


def test_set_condition_adds_a_new_condition_stamped_now() -> None:
    conditions = ready("True")([])
    assert len(conditions) == 1
    condition = conditions[0]
    assert (condition.type, condition.status, condition.reason) == ("Ready", "True", "Reconciled")
    assert condition.observed_generation == 3
    assert condition.last_transition_time == "2024-05-01T12:00:00Z"


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    before = ready("False", "Progressing", at=T0)([])
    after = set_condition(
        before,
        type="Ready",
        status="False",
        reason="WaitingForPods",
        message="2 of 3 pods ready",
        observed_generation=4,
        now=T1,
    )
    assert after[0].last_transition_time == "2024-05-01T12:00:00Z"
    # Everything but the time follows the new call.
    assert after[0].reason == "WaitingForPods"
    assert after[0].message == "2 of 3 pods ready"
    assert after[0].observed_generation == 4


def test_set_condition_moves_transition_time_when_status_changes() -> None:
    before = ready("False", "Progressing", at=T0)([])
    after = ready("True", at=T1)(before)
    assert after[0].status == "True"
    assert after[0].last_transition_time == "2024-05-01T12:05:00Z"


def test_set_condition_keeps_other_conditions_and_their_order_and_leaves_input_alone() -> None:
    conditions = set_condition(
        [],
        type="NamespaceReady",
        status="True",
        reason="Active",
        message="ok",
        observed_generation=1,
        now=T0,
    )
    conditions = ready("False", "Progressing")(conditions)
    snapshot = [c.model_copy() for c in conditions]
    updated = set_condition(
        conditions,
        type="NamespaceReady",
        status="False",
        reason="Terminating",
        message="namespace is terminating",
        observed_generation=2,
        now=T1,
    )
    assert [c.type for c in updated] == ["NamespaceReady", "Ready"]
    assert updated[0].status == "False"
    assert updated[1] == conditions[1]
    assert conditions == snapshot


def test_get_condition_and_is_condition_true() -> None:
    conditions = ready("True")([])
    found = get_condition(conditions, "Ready")
    assert found is not None
    assert found.status == "True"
    assert get_condition(conditions, "Degraded") is None
    assert is_condition_true(conditions, "Ready")
    assert not is_condition_true(conditions, "Degraded")
    assert not is_condition_true(ready("Unknown")([]), "Ready")


def test_set_condition_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        ready("True", at=datetime.datetime(2024, 5, 1, 12, 0))([])


def test_rfc3339_writes_utc_with_z() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    assert rfc3339(datetime.datetime(2024, 5, 1, 14, 0, 7, 123, tzinfo=plus_two)) == (
        "2024-05-01T12:00:07Z"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reason", "not camel case", "CamelCase reason"),
        ("reason", "", "at least 1 character"),
        ("status", "Yes", "'True', 'False' or 'Unknown'"),
        ("lastTransitionTime", "yesterday", "RFC 3339"),
        ("lastTransitionTime", "2024-05-01T12:00:00", "RFC 3339"),  # no zone
        ("type", "has space", "CamelCase condition type"),
    ],
)
def test_condition_refuses_what_the_api_server_refuses(
    field: str, value: str, message: str
) -> None:
    good = {
        "type": "Ready",
        "status": "True",
        "reason": "Reconciled",
        "message": "",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
    }
    with pytest.raises(pydantic.ValidationError) as caught:
        Condition.model_validate({**good, field: value})
    error = spec_error_from_validation("CleoTenant", caught.value, root="status.conditions[0]")
    assert str(error).startswith(f"status.conditions[0].{field}: ")
    assert message in str(error)


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", datetime.timedelta(days=90)),
        ("12h", datetime.timedelta(hours=12)),
        ("30m", datetime.timedelta(minutes=30)),
        ("45s", datetime.timedelta(seconds=45)),
        ("1h30m", datetime.timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", datetime.timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("0s", datetime.timedelta(0)),
        ("90m", datetime.timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "d", "1w", "1m1h", "1h 30m", "-1h", "1.5h", "1H", "h1"])
def test_parse_duration_refuses_what_is_no_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration such as 90d"):
        parse_duration(text)


@given(
    days=st.none() | st.integers(0, 9_999_999),
    hours=st.none() | st.integers(0, 9_999_999),
    minutes=st.none() | st.integers(0, 9_999_999),
    seconds=st.none() | st.integers(0, 9_999_999),
)
def test_parse_duration_adds_up_its_parts(
    days: int | None, hours: int | None, minutes: int | None, seconds: int | None
) -> None:
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    text = "".join(f"{n}{unit}" for n, unit in parts if n is not None)
    if not text:
        return
    expected = datetime.timedelta(
        days=days or 0, hours=hours or 0, minutes=minutes or 0, seconds=seconds or 0
    )
    assert parse_duration(text) == expected


class Periods(SpecModel):
    delay: Duration = "60s"
    period: PositiveDuration | None = None


def test_duration_fields_accept_durations_and_name_the_field_when_not() -> None:
    assert Periods.model_validate({"delay": "0s", "period": "1h30m"}).period == "1h30m"
    with pytest.raises(pydantic.ValidationError) as caught:
        Periods.model_validate({"delay": "soon", "period": "0d0h"})
    error = spec_error_from_validation("X", caught.value)
    assert [issue.path for issue in error.issues] == ["spec.delay", "spec.period"]
    assert "a duration such as 90d" in error.issues[0].message
    assert error.issues[1].message == "must be longer than zero, e.g. 90d"


# --- quantities and counts ----------------------------------------------------------------


class Amounts(SpecModel):
    quantity: Quantity | None = None
    budget: IntOrPercent | None = None
    at: Timestamp | None = None


@pytest.mark.parametrize(
    "value", [1, 0, "500m", "2Gi", "1.5", "1e3", "100M", ".5", "+1", "1Ki", "12E", "3n"]
)
def test_quantity_accepts_kubernetes_quantities_as_written(value: int | str) -> None:
    assert Amounts.model_validate({"quantity": value}).quantity == value


@pytest.mark.parametrize("value", [1.5, True, "2GB", "1 Gi", "", "Gi", "0x10", "1.5.5", "5%"])
def test_quantity_refuses_what_is_no_quantity(value: Any) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Amounts.model_validate({"quantity": value})
    error = spec_error_from_validation("X", caught.value)
    assert str(error).startswith("spec.quantity: must be a Kubernetes quantity")


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), ("50%", True), ("100%", True), ("101%", False), ("50", False), (-1, False)],
)
def test_int_or_percent(value: int | str, ok: bool) -> None:
    if ok:
        assert Amounts.model_validate({"budget": value}).budget == value
    else:
        with pytest.raises(pydantic.ValidationError, match="percentage"):
            Amounts.model_validate({"budget": value})


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["acme", "a", "acme-prod-2", "a" * 40])
def test_tenant_names_that_fit(name: str) -> None:
    validate_tenant_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 41, "at most 40 characters"),
        ("Acme", "DNS label"),
        ("acme.prod", "DNS label"),
        ("-acme", "DNS label"),
        ("acme-", "DNS label"),
        ("acme_prod", "DNS label"),
    ],
)
def test_tenant_names_that_do_not_fit(name: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_tenant_name(name)
    assert str(caught.value).startswith("metadata.name: ")
    assert message in str(caught.value)


# --- spec errors --------------------------------------------------------------------------


def test_format_path_writes_kubernetes_field_paths() -> None:
    assert format_path("spec", ("workload", "env", 2, "name")) == "spec.workload.env[2].name"
    assert format_path("spec", ("selector", "app.kubernetes.io/name")) == (
        "spec.selector[app.kubernetes.io/name]"
    )
    assert format_path("", ("a", 0)) == "a[0]"


class Secretive(SpecModel):
    count: int = 0
    token: str = pydantic.Field(default="", max_length=4)


def test_spec_errors_never_carry_input_values() -> None:
    secret = "s3cr3t-do-not-log"
    with pytest.raises(pydantic.ValidationError) as caught:
        Secretive.model_validate({"count": secret, "token": secret})
    # pydantic's own text would leak it; ours must not.
    assert secret in str(caught.value)
    error = spec_error_from_validation("X", caught.value)
    assert secret not in str(error)
    assert secret not in repr(error)
    assert "spec.count: " in str(error)
    assert "spec.token: must have at most 4 characters" in str(error)
    assert error.reason == "InvalidSpec"
