"""Cron schedules: parsing as the CronJob controller does, fire times, the interval.

Fire times are checked against a brute-force oracle written here from the rules (walk every
minute and ask whether it matches), so the day-by-day search of `next_after` is compared
with an independent computation, not with itself.
"""

from __future__ import annotations

import datetime
import itertools
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleo_operator.api.cron import MACROS, CronError, CronSchedule, parse_cron

UTC = datetime.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("0 3 * * *", "minutes", {0}),
        ("0,15,30,45 * * * *", "minutes", {0, 15, 30, 45}),
        ("*/20 * * * *", "minutes", {0, 20, 40}),
        ("5/15 * * * *", "minutes", {5, 20, 35, 50}),  # N/STEP means N-max/STEP
        ("10-13 * * * *", "minutes", {10, 11, 12, 13}),
        ("10-20/5 * * * *", "minutes", {10, 15, 20}),
        ("0 9-17/4 * * *", "hours", {9, 13, 17}),
        ("0 0 1,15 * *", "days_of_month", {1, 15}),
        ("0 0 * JAN-mar,Dec *", "months", {1, 2, 3, 12}),
        ("0 0 * * MON-FRI", "days_of_week", {1, 2, 3, 4, 5}),
        ("0 0 * * sun,6", "days_of_week", {0, 6}),
        ("0 0 ? * *", "days_of_month", set(range(1, 32))),
    ],
)
def test_fields_admit_what_cron_says(text: str, field: str, values: set[int]) -> None:
    assert getattr(parse_cron(text), field) == values


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_macros_are_their_five_field_forms(macro: str) -> None:
    as_macro, expanded = parse_cron(macro), parse_cron(MACROS[macro])
    start = at("2026-01-30T12:34:00")
    assert as_macro.fire_times(start, count=5) == expanded.fire_times(start, count=5)


def test_macros_fire_when_their_names_say() -> None:
    start = at("2026-05-13T10:20:00")  # a Wednesday
    assert parse_cron("@hourly").next_after(start) == at("2026-05-13T11:00:00")
    assert parse_cron("@daily").next_after(start) == at("2026-05-14T00:00:00")
    assert parse_cron("@weekly").next_after(start) == at("2026-05-17T00:00:00")  # Sunday
    assert parse_cron("@monthly").next_after(start) == at("2026-06-01T00:00:00")
    assert parse_cron("@yearly").next_after(start) == at("2027-01-01T00:00:00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("* * * *", "5 fields"),
        ("* * * * * *", "this one has 6"),
        ("61 * * * *", "minute field: 61 is above the maximum 59"),
        ("* 24 * * *", "hour field: 24 is above the maximum 23"),
        ("* * 0 * *", "day of month field: 0 is below the minimum 1"),
        ("* * * 13 *", "month field: 13 is above the maximum 12"),
        ("* * * * 7", "day of week field: 7 is above the maximum 6"),
        ("30-10 * * * *", "starts after it ends"),
        ("*/0 * * * *", "step"),
        ("*/x * * * *", "step"),
        ("1/2/3 * * * *", "more than one '/'"),
        ("1-2-3 * * * *", "more than one '-'"),
        ("1, * * * *", "empty list entry"),
        ("a * * * *", "minute field: 'a' is not a number"),
        ("* * * FOO *", "month field: 'FOO' is not a number or a name such as JAN"),
        ("-5 * * * *", "not a value or a range"),
        ("@every 5m", "not a known macro"),
        ("@reboot", "not a known macro"),
        ("TZ=Europe/Berlin 0 3 * * *", "spec.timeZone"),
        ("CRON_TZ=UTC 0 3 * * *", "spec.timeZone"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_bad_schedules_say_which_field_and_why(text: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(text)
    assert message in str(caught.value)


def test_a_day_that_only_some_years_have_is_a_schedule() -> None:
    leap_day = parse_cron("0 0 29 2 *")
    assert leap_day.next_after(at("2026-03-01T00:00:00")) == at("2028-02-29T00:00:00")
    # Restricted day of week too: either field chooses, so the 30th of February is harmless.
    assert parse_cron("0 0 30 2 1").next_after(at("2026-02-01T00:00:00")) == at(
        "2026-02-02T00:00:00"
    )


# --------------------------------------------------------------------------- day rules


def test_two_restricted_day_fields_fire_on_either() -> None:
    friday_or_13th = parse_cron("0 0 13 * 5")
    days = [t.date().isoformat() for t in friday_or_13th.fire_times(at("2026-02-01"), count=6)]
    # 2026-02-06 is a Friday, the 13th of February 2026 is a Friday too.
    assert days == [
        "2026-02-06",
        "2026-02-13",
        "2026-02-20",
        "2026-02-27",
        "2026-03-06",
        "2026-03-13",
    ]


def test_a_star_day_field_makes_the_other_one_decide_alone() -> None:
    fridays = parse_cron("0 0 * * 5")
    assert {t.weekday() for t in fridays.fire_times(at("2026-01-01"), count=10)} == {4}
    thirteenths = parse_cron("0 0 13 * *")
    assert {t.day for t in thirteenths.fire_times(at("2026-01-01"), count=10)} == {13}


def test_a_stepped_star_counts_as_a_restriction() -> None:
    # robfig/cron (the CronJob controller): "*/2" is no star, so the days are OR'ed.
    schedule = parse_cron("0 0 */10 * 1")
    days = {t.date() for t in schedule.fire_times(at("2026-05-31T12:00:00"), count=12)}
    assert datetime.date(2026, 6, 1) in days  # the 1st by */10 (and a Monday)
    assert datetime.date(2026, 6, 8) in days  # a Monday, not in */10
    assert datetime.date(2026, 6, 11) in days  # by */10, a Thursday


# --------------------------------------------------------------------------- fire times


def _oracle_matches(schedule: CronSchedule, local: datetime.datetime) -> bool:
    """Written from the rules, minute by minute: does this wall-clock minute fire?"""
    cron_weekday = local.isoweekday() % 7
    dom = local.day in schedule.days_of_month
    dow = cron_weekday in schedule.days_of_week
    day_ok = (
        (dom and dow) if (schedule.day_of_month_star or schedule.day_of_week_star) else (dom or dow)
    )
    return (
        local.minute in schedule.minutes
        and local.hour in schedule.hours
        and local.month in schedule.months
        and day_ok
    )


def _oracle_next(schedule: CronSchedule, after: datetime.datetime) -> datetime.datetime:
    moment = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    for _ in range(60 * 24 * 40):
        if _oracle_matches(schedule, moment):
            return moment
        moment += datetime.timedelta(minutes=1)
    raise AssertionError("the oracle found nothing within 40 days")


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    single = value.map(str)
    ranged = st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}")
    stepped = st.tuples(st.sampled_from(["*", str(low)]), st.integers(1, 7)).map(
        lambda p: f"{p[0]}/{p[1]}"
    )
    part = st.one_of(st.just("*"), single, ranged, stepped)
    return st.lists(part, min_size=1, max_size=3).map(",".join)


schedules = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 6)).map(
    " ".join
)


@settings(max_examples=150, deadline=None)
@given(
    text=schedules,
    start=st.datetimes(
        min_value=datetime.datetime(2026, 1, 1), max_value=datetime.datetime(2027, 12, 31)
    ),
)
def test_next_fire_time_is_the_first_matching_minute(text: str, start: datetime.datetime) -> None:
    schedule = parse_cron(text)
    after = start.replace(tzinfo=UTC)
    found = schedule.next_after(after)
    assert found is not None
    assert found > after
    # The oracle walks minutes; schedules that fire rarely (one month a year) are compared
    # only when the next run is within its 40-day reach.
    if found - after <= datetime.timedelta(days=39):
        assert found == _oracle_next(schedule, after)
    else:
        assert _oracle_matches(schedule, found)


def test_fire_times_are_increasing_and_spaced_by_the_schedule() -> None:
    times = parse_cron("*/15 * * * *").fire_times(at("2026-03-01T10:07:30"), count=5)
    assert times == [
        at("2026-03-01T10:15:00"),
        at("2026-03-01T10:30:00"),
        at("2026-03-01T10:45:00"),
        at("2026-03-01T11:00:00"),
        at("2026-03-01T11:15:00"),
    ]


def test_the_time_zone_decides_the_wall_clock() -> None:
    schedule = parse_cron("0 3 * * *")
    # Berlin is UTC+1 in winter and UTC+2 in summer: 03:00 local is 02:00Z or 01:00Z.
    assert schedule.next_after(at("2026-01-10T00:00:00"), tz=BERLIN) == at("2026-01-10T02:00:00")
    assert schedule.next_after(at("2026-07-10T00:00:00"), tz=BERLIN) == at("2026-07-10T01:00:00")


def test_a_skipped_wall_clock_time_fires_once_after_the_change() -> None:
    # 2026-03-29: Berlin skips 02:00-03:00. "30 2" fires at 01:30Z (03:30 summer time).
    schedule = parse_cron("30 2 * * *")
    times = schedule.fire_times(at("2026-03-28T12:00:00"), count=3, tz=BERLIN)
    assert times == [
        at("2026-03-29T01:30:00"),
        at("2026-03-30T00:30:00"),
        at("2026-03-31T00:30:00"),
    ]


def test_a_repeated_wall_clock_time_fires_once() -> None:
    # 2026-10-25: Berlin has 02:00-03:00 twice. "30 2" fires once, at the first (00:30Z).
    schedule = parse_cron("30 2 * * *")
    times = schedule.fire_times(at("2026-10-24T12:00:00"), count=3, tz=BERLIN)
    assert times == [
        at("2026-10-25T00:30:00"),
        at("2026-10-26T01:30:00"),
        at("2026-10-27T01:30:00"),
    ]


def test_every_minute_across_a_skipped_hour_never_goes_backwards() -> None:
    schedule = parse_cron("* * * * *")
    times = schedule.fire_times(at("2026-03-29T00:55:00"), count=20, tz=BERLIN)
    assert times == sorted(set(times))
    assert all(b - a == datetime.timedelta(minutes=1) for a, b in itertools.pairwise(times))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_cron("@daily").next_after(datetime.datetime(2026, 1, 1))


# --------------------------------------------------------------------------- interval


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("* * * * *", datetime.timedelta(minutes=1)),
        ("*/15 * * * *", datetime.timedelta(minutes=15)),
        ("@hourly", datetime.timedelta(hours=1)),
        ("0 3 * * *", datetime.timedelta(days=1)),
        ("0 9-17 * * *", datetime.timedelta(hours=16)),  # 17:00 to 09:00 the next day
        ("0 3 * * 1-5", datetime.timedelta(days=3)),  # Friday to Monday
        ("@weekly", datetime.timedelta(days=7)),
        ("@monthly", datetime.timedelta(days=31)),
        ("0 0 1 */6 *", datetime.timedelta(days=184)),  # July 1 to January 1
        ("0 0 29 2 *", datetime.timedelta(days=4 * 365 + 1)),
        ("* 3 1 1 *", datetime.timedelta(days=366, minutes=-59)),  # 03:59 to 03:00 next year
    ],
)
def test_the_interval_is_the_longest_gap_between_runs(
    text: str, interval: datetime.timedelta
) -> None:
    assert parse_cron(text).interval(start=datetime.date(2026, 1, 1)) == interval


def test_the_interval_agrees_with_the_gaps_between_fire_times() -> None:
    schedule = parse_cron("15 8,20 * * 1,3,5")
    start = at("2026-04-01T00:00:00")
    times = schedule.fire_times(start, count=60)
    longest = max(b - a for a, b in itertools.pairwise(times))
    assert schedule.interval(start=start.date()) == longest == datetime.timedelta(days=2, hours=12)
