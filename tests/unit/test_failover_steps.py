"""The pure parts of the failover: resume order, recorded times, the objectives verdict,
lag samples and WAL positions. No services: these run anywhere, fast."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleo_operator.core.times import read_rfc3339, rfc3339_ms
from cleo_operator.failover.faults import FAULT_POINT_ENV, check_fault_point_env
from cleo_operator.failover.probe import lsn_bytes
from cleo_operator.failover.samples import LagSample
from cleo_operator.failover.steps import (
    DRILL_STEPS,
    MOVE_STEPS,
    StepRecord,
    judge_objectives,
    next_step,
    promotion_started,
    records_for,
    seconds_between,
    steps_for,
)

T0 = datetime.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)

moments = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1),
    max_value=datetime.datetime(2100, 1, 1),
    timezones=st.just(datetime.UTC),
)


@given(moments)
def test_recorded_times_keep_milliseconds(moment: datetime.datetime) -> None:
    text = rfc3339_ms(moment)
    assert text.endswith("Z")
    parsed = read_rfc3339(text)
    assert parsed is not None
    assert abs((parsed - moment).total_seconds()) < 0.001


@given(moments, st.floats(min_value=0, max_value=86400))
def test_seconds_between_recorded_times(start: datetime.datetime, seconds: float) -> None:
    end = start + datetime.timedelta(seconds=seconds)
    measured = seconds_between(rfc3339_ms(start), rfc3339_ms(end))
    assert measured is not None
    assert measured == pytest.approx(seconds, abs=0.002)


def test_times_that_cannot_be_read_give_no_number() -> None:
    assert seconds_between(None, rfc3339_ms(T0)) is None
    assert seconds_between("yesterday", rfc3339_ms(T0)) is None
    assert read_rfc3339("2025-03-01T12:00:00") is None  # no zone: not a time status writes
    with pytest.raises(ValueError, match="time zone"):
        rfc3339_ms(T0.replace(tzinfo=None))


def test_each_kind_has_its_steps() -> None:
    assert steps_for("Failover") == steps_for("Switchover") == MOVE_STEPS
    assert steps_for("Drill") == DRILL_STEPS
    # A drill never fences, promotes or repoints anything.
    assert not {"fence", "promote", "repoint", "rollout"} & set(DRILL_STEPS)


def test_resume_starts_at_the_first_step_that_has_not_ended() -> None:
    stored = [
        {"name": "preflight", "state": "Succeeded", "startTime": rfc3339_ms(T0)},
        {"name": "fence", "state": "Succeeded"},
        {"name": "check-lag", "state": "Running", "startTime": rfc3339_ms(T0)},
        {"name": "not-a-step", "state": "Running"},
    ]
    records = records_for("Switchover", stored)
    assert [r.name for r in records] == list(MOVE_STEPS)
    step = next_step(records)
    assert step is not None
    assert step.name == "check-lag"
    assert not promotion_started(records)
    records[3].state = "Running"
    assert promotion_started(records)
    for record in records:
        record.finish("Succeeded", T0, "done")
    assert next_step(records) is None


def test_a_resumed_step_keeps_its_first_start_time() -> None:
    record = StepRecord(name="promote")
    record.start(T0)
    first = record.start_time
    record.start(T0 + datetime.timedelta(minutes=5))
    assert record.start_time == first
    record.finish("Succeeded", T0 + datetime.timedelta(minutes=6), "x" * 5000)
    assert record.message is not None
    assert len(record.message) == 1024
    assert record.to_api()["endTime"] == rfc3339_ms(T0 + datetime.timedelta(minutes=6))


def test_an_unknown_state_in_status_counts_as_pending() -> None:
    record = StepRecord.from_api({"name": "fence", "state": "Exploded", "startTime": 5})
    assert record.state == "Pending"
    assert record.start_time is None


@pytest.mark.parametrize(
    ("objectives", "measures", "verdict"),
    [
        ((None, None), (3.0, 0.0), ("True", "NoObjectives", ())),
        ((10, 5), (3.0, 0.0), ("True", "ObjectivesMet", ())),
        ((10, None), (12.5, None), ("False", "RTOMissed", ("RTO",))),
        ((None, 5), (3.0, 7.0), ("False", "RPOMissed", ("RPO",))),
        ((1, 1), (3.0, 7.0), ("False", "RTOAndRPOMissed", ("RTO", "RPO"))),
        ((10, 5), (3.0, None), ("Unknown", "RPOUnknown", ())),
        ((10, 5), (None, 1.0), ("Unknown", "RTOUnknown", ())),
        ((10, 5), (None, None), ("Unknown", "ObjectivesUnknown", ())),
        # A known miss outweighs an unknown: it is False, not Unknown.
        ((1, 5), (3.0, None), ("False", "RTOMissed", ("RTO",))),
    ],
)
def test_objectives_verdict(
    objectives: tuple[int | None, int | None],
    measures: tuple[float | None, float | None],
    verdict: tuple[str, str, tuple[str, ...]],
) -> None:
    (rto, rpo), (measured, estimated) = objectives, measures
    judged = judge_objectives(
        rto_objective=rto,
        rpo_objective=rpo,
        measured_rto=measured,
        estimated_rpo_seconds=estimated,
    )
    assert (judged.status, judged.reason, judged.missed) == verdict


def test_a_drill_says_would() -> None:
    verdict = judge_objectives(
        rto_objective=10,
        rpo_objective=None,
        measured_rto=2.0,
        estimated_rpo_seconds=None,
        drill=True,
    )
    assert "would be within" in verdict.message


@given(
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**53)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
    moments,
)
def test_lag_samples_survive_their_annotation(
    size: int | None, seconds: float | None, at: datetime.datetime
) -> None:
    sample = LagSample(site="east", bytes=size, seconds=seconds, at=at)
    back = LagSample.from_annotation(sample.to_annotation())
    assert back is not None
    assert (back.site, back.bytes) == ("east", size)
    assert back.seconds == (None if seconds is None else pytest.approx(seconds))
    assert abs((back.at - at).total_seconds()) < 0.001


@pytest.mark.parametrize(
    "text", [None, "", "not json", "[]", '{"site": "east"}', '{"site": 1, "at": "x"}']
)
def test_a_malformed_lag_annotation_is_no_sample(text: str | None) -> None:
    assert LagSample.from_annotation(text) is None


def test_wal_positions_are_byte_offsets() -> None:
    assert lsn_bytes("0/0") == 0
    assert lsn_bytes("0/16B3748") == 0x16B3748
    assert lsn_bytes("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert lsn_bytes("1/0") - lsn_bytes("0/FFFFFFFF") == 1


def test_a_fault_point_must_name_a_step() -> None:
    check_fault_point_env({})
    check_fault_point_env({FAULT_POINT_ENV: "promote"})
    with pytest.raises(ValueError, match="names no failover step"):
        check_fault_point_env({FAULT_POINT_ENV: "promotion"})
