"""Retention rules on simulated backup histories: exactly which backups survive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleo_operator.api.backup import RetentionSpec
from cleo_operator.backup.retention import BackupInfo, RetentionPolicy, select_to_keep


def hourly(start: datetime, end: datetime) -> list[BackupInfo]:
    """A backup at the top of every hour from `start` to `end` inclusive."""
    backups = []
    moment = start
    while moment <= end:
        backups.append(BackupInfo(id=moment.strftime("%Y%m%dT%H%M%SZ"), time=moment))
        moment += timedelta(hours=1)
    return backups


def at(day: int, hour: int, *, month: int = 3) -> str:
    return datetime(2026, month, day, hour, tzinfo=UTC).strftime("%Y%m%dT%H%M%SZ")


MARCH = hourly(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, 23, tzinfo=UTC))
NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)  # a Tuesday


def test_a_month_of_hourly_backups_keeps_exactly_the_gfs_set() -> None:
    kept = select_to_keep(
        MARCH,
        RetentionPolicy(keep_last=5, keep_hourly=24, keep_daily=7, keep_weekly=4, keep_monthly=2),
        now=NOW,
    )
    # keep_hourly: each hour of March 31 (the last 24 hours, 00:00 to 23:00), which also
    # holds the 5 newest (keep_last).
    expected = {at(31, hour) for hour in range(24)}
    # keep_daily: the newest of each of the last 7 days, March 25 to 31.
    expected |= {at(day, 23) for day in range(25, 32)}
    # keep_weekly: ISO weeks of Mar 30-Apr 5, Mar 23-29, Mar 16-22, Mar 9-15.
    expected |= {at(31, 23), at(29, 23), at(22, 23), at(15, 23)}
    # keep_monthly: March (its newest) and February (no backups there).
    expected |= {at(31, 23)}
    assert kept == expected
    assert len(kept) == 24 + 6 + 2


def test_monthly_and_weekly_reach_back_across_a_month_boundary() -> None:
    backups = hourly(datetime(2026, 2, 15, tzinfo=UTC), datetime(2026, 3, 31, 23, tzinfo=UTC))
    kept = select_to_keep(backups, RetentionPolicy(keep_monthly=3, keep_weekly=8), now=NOW)
    # Months: March, February (its newest: Feb 28 23:00), January (none).
    # Weeks back from Mar 30: Mar 30, 23, 16, 9, 2 (Mon), Feb 23, Feb 16, Feb 9 (no data
    # before Feb 15, so the week of Feb 9-15 has only Feb 15).
    expected = {
        at(31, 23),
        at(28, 23, month=2),
        at(29, 23),
        at(22, 23),
        at(15, 23),
        at(8, 23),
        at(1, 23),
        at(22, 23, month=2),
        at(15, 23, month=2),
    }
    assert kept == expected


def test_keep_last_alone_keeps_the_newest_n() -> None:
    kept = select_to_keep(MARCH, RetentionPolicy(keep_last=3), now=NOW)
    assert kept == {at(31, 23), at(31, 22), at(31, 21)}


def test_periods_are_counted_back_from_now_not_from_the_newest_backup() -> None:
    # Backups stopped on March 20; a week later keepDaily 3 keeps none of its own.
    backups = hourly(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 20, 23, tzinfo=UTC))
    kept = select_to_keep(
        backups, RetentionPolicy(keep_daily=3), now=datetime(2026, 3, 27, 12, tzinfo=UTC)
    )
    # Only the newest backup survives (it is never pruned).
    assert kept == {at(20, 23)}


def test_newest_verified_backup_is_never_pruned() -> None:
    backups = [BackupInfo(id=b.id, time=b.time, verified=b.id == at(10, 3)) for b in MARCH]
    kept = select_to_keep(backups, RetentionPolicy(keep_last=2), now=NOW)
    assert kept == {at(31, 23), at(31, 22), at(10, 3)}
    # Only the newest verified one is protected, not every verified one.
    backups = [
        BackupInfo(id=b.id, time=b.time, verified=b.id in {at(10, 3), at(12, 5)}) for b in MARCH
    ]
    assert select_to_keep(backups, RetentionPolicy(keep_last=1), now=NOW) == {at(31, 23), at(12, 5)}


def test_all_zero_counts_still_keep_the_newest_backup() -> None:
    kept = select_to_keep(
        MARCH,
        RetentionPolicy(keep_last=0, keep_hourly=0, keep_daily=0, keep_weekly=0, keep_monthly=0),
        now=NOW,
    )
    assert kept == {at(31, 23)}


def test_no_rule_at_all_keeps_everything() -> None:
    assert select_to_keep(MARCH, RetentionPolicy(), now=NOW) == {b.id for b in MARCH}
    assert RetentionPolicy.from_spec(None).keeps_everything
    assert RetentionPolicy.from_spec(RetentionSpec()).keeps_everything
    policy = RetentionPolicy.from_spec(RetentionSpec(keep_daily=7))
    assert not policy.keeps_everything
    assert policy.keep_daily == 7


def test_backups_dated_after_now_are_kept() -> None:
    future = BackupInfo(id="future", time=NOW + timedelta(hours=5))
    kept = select_to_keep([*MARCH, future], RetentionPolicy(keep_last=1), now=NOW)
    assert kept == {"future", at(31, 23)}


def test_days_follow_the_given_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 23:30 UTC on March 10 is already March 11 in Berlin (UTC+1 in March before DST).
    late = BackupInfo(id="late", time=datetime(2026, 3, 10, 23, 30, tzinfo=UTC))
    early = BackupInfo(id="early", time=datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    newest = BackupInfo(id="newest", time=datetime(2026, 3, 12, 12, 0, tzinfo=UTC))
    now = datetime(2026, 3, 12, 13, 0, tzinfo=UTC)
    in_utc = select_to_keep([early, late, newest], RetentionPolicy(keep_daily=3), now=now)
    in_berlin = select_to_keep(
        [early, late, newest], RetentionPolicy(keep_daily=3), now=now, tz=berlin
    )
    assert in_utc == {"late", "newest"}  # both on March 10 in UTC: the later one wins
    assert in_berlin == {"early", "late", "newest"}  # March 10 and March 11 in Berlin


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        select_to_keep(MARCH, RetentionPolicy(keep_last=1), now=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="keep_daily must be a count"):
        select_to_keep(MARCH, RetentionPolicy(keep_daily=-1), now=NOW)
    assert select_to_keep([], RetentionPolicy(keep_last=3), now=NOW) == set()


# --------------------------------------------------------------------------- properties

counts = st.none() | st.integers(min_value=0, max_value=40)
offsets = st.lists(
    st.tuples(st.integers(min_value=0, max_value=24 * 120), st.booleans()),
    min_size=1,
    max_size=60,
    unique_by=lambda pair: pair[0],
)


def _history(pairs: list[tuple[int, bool]]) -> list[BackupInfo]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        BackupInfo(id=f"b{minutes:06d}", time=base + timedelta(minutes=37 * minutes), verified=v)
        for minutes, v in pairs
    ]


rule_sets = st.fixed_dictionaries(
    {
        "keep_last": counts,
        "keep_hourly": counts,
        "keep_daily": counts,
        "keep_weekly": counts,
        "keep_monthly": counts,
    }
)


@settings(max_examples=200, deadline=None)
@given(
    pairs=offsets,
    rules=rule_sets,
    extra_hours=st.integers(min_value=0, max_value=24 * 60),
)
def test_selection_properties(
    pairs: list[tuple[int, bool]], rules: dict[str, int | None], extra_hours: int
) -> None:
    backups = _history(pairs)
    now = max(b.time for b in backups) + timedelta(hours=extra_hours)
    kept = select_to_keep(backups, RetentionPolicy(**rules), now=now)
    ids = {b.id for b in backups}
    assert kept <= ids
    newest = max(backups, key=lambda b: b.time)
    assert newest.id in kept
    verified = [b for b in backups if b.verified]
    if verified:
        assert max(verified, key=lambda b: b.time).id in kept
    # Applying the same rules to what was kept keeps all of it (pruning is stable).
    survivors = [b for b in backups if b.id in kept]
    assert select_to_keep(survivors, RetentionPolicy(**rules), now=now) == kept
    # Raising any count never drops a backup that was kept.
    for rule, value in rules.items():
        if value is not None:
            assert kept <= select_to_keep(
                backups, RetentionPolicy(**{**rules, rule: value + 1}), now=now
            )
    # keep_last keeps at least min(N, len) backups.
    last = rules["keep_last"]
    if last is not None:
        assert len(kept) >= min(last, len(backups))
    # With every rule unset, nothing is pruned.
    if all(v is None for v in rules.values()):
        assert kept == ids


# -- one-offs (spec.from): outside the rules -----------------------------------------------


def _one_offs(count: int, *, after: datetime) -> list[BackupInfo]:
    """`count` one-offs a second apart from `after` on: a tenant admin asking in a loop."""
    return [
        BackupInfo(id=f"one-off-{i:04d}", time=after + timedelta(seconds=i), one_off=True)
        for i in range(count)
    ]


@pytest.mark.security
@pytest.mark.parametrize(
    "policy",
    [
        RetentionPolicy(keep_last=5),
        RetentionPolicy(keep_daily=7, keep_weekly=4),
        RetentionPolicy(keep_last=0, keep_hourly=0),
        RetentionPolicy(keep_last=3, keep_one_offs=0),
    ],
    ids=["last", "daily-weekly", "all-zero", "no-one-offs"],
)
def test_one_offs_in_a_loop_never_push_a_scheduled_backup_out(policy: RetentionPolicy) -> None:
    # The attacker: a tenant admin (or its stolen credentials) creating and deleting one-offs
    # as fast as it can, to erase the history before encrypting the database.
    scheduled = [b for b in MARCH if b.time.hour == 23]  # a nightly backup
    scheduled[-3] = BackupInfo(id=scheduled[-3].id, time=scheduled[-3].time, verified=True)
    before = select_to_keep(scheduled, policy, now=NOW)
    spam = _one_offs(500, after=datetime(2026, 3, 31, 23, 1, tzinfo=UTC))
    after = select_to_keep(scheduled + spam, policy, now=NOW)
    assert {b.id for b in scheduled} & after == before
    assert scheduled[-3].id in after  # the newest verified scheduled backup too
    # The one-offs are bounded by their own count, newest first.
    kept_one_offs = sorted(after - before)
    assert kept_one_offs == [b.id for b in spam[len(spam) - policy.keep_one_offs :]]


def test_a_verified_one_off_does_not_take_the_newest_verified_slot() -> None:
    scheduled = [
        BackupInfo(id="a", time=NOW - timedelta(days=3), verified=True),
        BackupInfo(id="b", time=NOW - timedelta(days=2)),
        BackupInfo(id="c", time=NOW - timedelta(days=1)),
    ]
    one_off = BackupInfo(id="x", time=NOW - timedelta(hours=1), verified=True, one_off=True)
    kept = select_to_keep([*scheduled, one_off], RetentionPolicy(keep_last=1), now=NOW)
    assert kept == {"a", "c", "x"}


def test_one_offs_alone_keep_the_newest_n_and_no_rule_keeps_them_all() -> None:
    spam = _one_offs(10, after=NOW - timedelta(hours=2))
    assert select_to_keep(spam, RetentionPolicy(keep_last=1, keep_one_offs=2), now=NOW) == {
        "one-off-0008",
        "one-off-0009",
    }
    # Without a rule nothing is pruned, one-offs included (the owner never said how many).
    assert select_to_keep(spam, RetentionPolicy(keep_one_offs=0), now=NOW) == {b.id for b in spam}


def test_keep_one_offs_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="keep_one_offs"):
        RetentionPolicy(keep_one_offs=-1)
