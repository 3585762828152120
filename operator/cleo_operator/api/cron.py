"""Cron schedules as the Kubernetes CronJob controller reads them: parse, fire times, interval.

Why a parser of our own (and no new dependency): the operator needs three things the
CronJob controller does not tell it. It must refuse a schedule the controller would refuse
*before* applying the CronJob, as a condition that names ``spec.schedule`` and says what is
wrong (the CRD's pattern only checks the shape: five fields or a macro). It needs the
schedule's interval, because a CleoBackup is stale (``BackupFresh=False``) when its newest
archive is older than twice that. And it reports when the next run is due.

The meaning follows the parser the CronJob controller uses (robfig/cron v3,
``ParseStandard``), so that what the operator computes is what the controller does:

- five fields, minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC),
  day of week (0-6 or SUN-SAT, 0 is Sunday), separated by blanks; or one of the macros
  ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``),
  ``@hourly``;
- each field is a comma-separated list of ``*`` (or ``?``), ``N``, ``N-M``, each optionally
  with ``/STEP``; ``N/STEP`` means ``N-max/STEP``; names are case-insensitive;
- day of month and day of week: when either field is ``*`` (or ``?``) a day must match
  both; when both are restricted, a day matching either one fires (Vixie cron's rule).
  ``*/STEP`` with a step above 1 counts as restricted, as in robfig/cron.

Stricter than the controller on purpose: ``TZ=``/``CRON_TZ=`` prefixes are refused (the
time zone belongs in ``spec.timeZone``, and Kubernetes refuses them too), ``@every`` is
refused (the CRD does not admit it), and so is a schedule that can never fire (``0 0 30 2
*``), which the controller accepts and then silently never runs.

Times are computed in the schedule's time zone. A wall-clock time that a daylight-saving
change skips fires at the same instant as the time with the offset before the change
(02:30 on a spring-forward night fires at 03:30 new time); a wall-clock time that occurs
twice fires once, at its first occurrence.
"""

from __future__ import annotations

import calendar
import datetime
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cleo_operator.core.errors import CleoError

__all__ = [
    "MACROS",
    "CronError",
    "CronSchedule",
    "parse_cron",
]

MACROS: Final[Mapping[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES: Final = {
    name.lower(): number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY_NAMES: Final = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}

SEARCH_DAYS: Final = 5 * 366
"""How far ahead `next_after` looks (as robfig/cron: five years, enough for a 29th of
February)."""
INTERVAL_DAYS: Final = 8 * 366
"""How far ahead `interval` looks for the longest gap: two leap days at least."""


class CronError(CleoError, ValueError, reason="InvalidSchedule", retryable=False):
    """A schedule that is not valid cron; the message names the field and the problem."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int]


_FIELDS: Final = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day of week", 0, 6, _DAY_NAMES),
)


def _number(text: str, field: _Field) -> int:
    named = field.names.get(text.lower())
    if named is not None:
        return named
    if not text.isdigit():
        hint = ""
        if field.names:
            examples = ", ".join(list(field.names)[:3]).upper()
            hint = f" or a name such as {examples}"
        raise CronError(f"{field.name} field: {text!r} is not a number{hint}")
    return int(text)


def _parse_part(part: str, field: _Field) -> tuple[set[int], bool]:
    """One comma-separated entry: its values and whether it counts as a star."""
    range_text, slash, step_text = part.partition("/")
    if "/" in step_text:
        raise CronError(f"{field.name} field: {part!r} has more than one '/'")
    star = range_text in ("*", "?")
    if star:
        start, end = field.low, field.high
    else:
        low_text, hyphen, high_text = range_text.partition("-")
        if "-" in high_text:
            raise CronError(f"{field.name} field: {part!r} has more than one '-'")
        if not low_text or (hyphen and not high_text):
            raise CronError(f"{field.name} field: {part!r} is not a value or a range")
        start = _number(low_text, field)
        end = _number(high_text, field) if hyphen else start
        if slash and not hyphen:
            end = field.high  # "N/STEP" means "N-max/STEP"
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronError(
                f"{field.name} field: the step in {part!r} must be a whole number above 0"
            )
        step = int(step_text)
    if start < field.low:
        raise CronError(f"{field.name} field: {start} is below the minimum {field.low}")
    if end > field.high:
        raise CronError(f"{field.name} field: {end} is above the maximum {field.high}")
    if start > end:
        raise CronError(f"{field.name} field: the range {part!r} starts after it ends")
    # As robfig/cron: "*/2" is a restriction, not a star, for the day-matching rule.
    return set(range(start, end + 1, step)), star and step == 1


def _parse_field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise CronError(f"{field.name} field: {text!r} has an empty list entry")
        part_values, part_star = _parse_part(part, field)
        values |= part_values
        star = star or part_star
    return frozenset(values), star


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule: the values each field admits (see the module docstring)."""

    text: str
    """The schedule as written."""
    minutes: frozenset[int]
    """Minutes of the hour it fires at."""
    hours: frozenset[int]
    """Hours of the day it fires at."""
    days_of_month: frozenset[int]
    """Days of the month (1-31) it may fire on."""
    months: frozenset[int]
    """Months (1-12) it fires in."""
    days_of_week: frozenset[int]
    """Days of the week (0 Sunday - 6 Saturday) it may fire on."""
    day_of_month_star: bool
    """The day-of-month field is ``*``: days are then chosen by the day of week alone."""
    day_of_week_star: bool
    """The day-of-week field is ``*``: days are then chosen by the day of month alone."""

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        """Parse a schedule; `CronError` says which field is wrong and how."""
        stripped = text.strip()
        if not stripped:
            raise CronError("the schedule is empty; write 5 fields such as '0 3 * * *' or @daily")
        upper = stripped.upper()
        if upper.startswith(("TZ=", "CRON_TZ=")):
            raise CronError("a time zone does not go into the schedule; set spec.timeZone instead")
        if stripped.startswith("@"):
            expanded = MACROS.get(stripped.lower())
            if expanded is None:
                raise CronError(
                    f"{stripped.split()[0]!r} is not a known macro; use one of "
                    "@hourly, @daily, @weekly, @monthly, @yearly"
                )
            fields = expanded.split()
        else:
            fields = stripped.split()
            if len(fields) != len(_FIELDS):
                raise CronError(
                    f"a schedule has 5 fields (minute hour day-of-month month day-of-week), "
                    f"this one has {len(fields)}"
                )
        parsed = [_parse_field(value, field) for value, field in zip(fields, _FIELDS, strict=True)]
        schedule = cls(
            text=text,
            minutes=parsed[0][0],
            hours=parsed[1][0],
            days_of_month=parsed[2][0],
            months=parsed[3][0],
            days_of_week=parsed[4][0],
            day_of_month_star=parsed[2][1],
            day_of_week_star=parsed[4][1],
        )
        if not schedule._can_fire():
            raise CronError(
                "it never fires: no month has the days of the month it names "
                f"({_listing(schedule.days_of_month)} of month {_listing(schedule.months)})"
            )
        return schedule

    def _can_fire(self) -> bool:
        if not (self.day_of_month_star or self.day_of_week_star):
            return True  # either field may choose the day, and every week has every weekday
        if self.day_of_month_star:
            return True
        # Only the day of month chooses (day of week is "*"): some month must have one of them.
        return any(
            day <= _longest_month(month) for month in self.months for day in self.days_of_month
        )

    def matches_day(self, day: datetime.date) -> bool:
        """Whether the schedule fires on this calendar day (in its time zone)."""
        if day.month not in self.months:
            return False
        by_month_day = day.day in self.days_of_month
        # date.weekday(): Monday is 0; cron: Sunday is 0.
        by_week_day = (day.weekday() + 1) % 7 in self.days_of_week
        if self.day_of_month_star or self.day_of_week_star:
            return by_month_day and by_week_day
        return by_month_day or by_week_day

    def times_of_day(self) -> list[datetime.time]:
        """The wall-clock times it fires at on a matching day, earliest first."""
        return [
            datetime.time(hour, minute)
            for hour in sorted(self.hours)
            for minute in sorted(self.minutes)
        ]

    def next_after(
        self, moment: datetime.datetime, *, tz: datetime.tzinfo = datetime.UTC
    ) -> datetime.datetime | None:
        """The first fire time strictly after `moment` (aware; returned in UTC).

        None when it does not fire within `SEARCH_DAYS` (it cannot, for a schedule that
        `parse` accepted, but the search is bounded all the same).
        """
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware (datetime.now(UTC))")
        times = self.times_of_day()
        first_day = moment.astimezone(tz).date() - datetime.timedelta(days=1)
        best: datetime.datetime | None = None
        best_day: datetime.date | None = None
        for offset in range(SEARCH_DAYS + 2):
            day = first_day + datetime.timedelta(days=offset)
            # Daylight-saving changes can reorder instants across a day boundary by a few
            # hours, so one more day is looked at after the first day with a candidate.
            if best_day is not None and day > best_day + datetime.timedelta(days=1):
                break
            if not self.matches_day(day):
                continue
            for clock in times:
                local = datetime.datetime.combine(day, clock, tzinfo=tz)
                instant = local.astimezone(datetime.UTC)
                if instant > moment and (best is None or instant < best):
                    best = instant
                    best_day = best_day or day
        return best

    def fire_times(
        self,
        after: datetime.datetime,
        *,
        count: int,
        tz: datetime.tzinfo = datetime.UTC,
    ) -> list[datetime.datetime]:
        """The next `count` fire times after `after`, in UTC, earliest first."""
        times: list[datetime.datetime] = []
        moment = after
        while len(times) < count:
            upcoming = self.next_after(moment, tz=tz)
            if upcoming is None:
                break
            times.append(upcoming)
            moment = upcoming
        return times

    def interval(self, *, start: datetime.date) -> datetime.timedelta | None:
        """The longest time between two consecutive runs, looking ahead from `start`.

        For regular schedules this is their period (``0 3 * * *``: a day); for irregular
        ones the longest gap (``0 3 * * 1-5``: three days, Friday to Monday). Computed on
        wall-clock time (a daylight-saving change adds or removes an hour). None when the
        schedule fires fewer than twice in `INTERVAL_DAYS`.
        """
        minutes = sorted(t.hour * 60 + t.minute for t in self.times_of_day())
        days = [
            offset
            for offset in range(INTERVAL_DAYS)
            if self.matches_day(start + datetime.timedelta(days=offset))
        ]
        gaps: list[int] = [b - a for a, b in itertools.pairwise(minutes)]
        gaps += [
            (later - earlier) * 24 * 60 - minutes[-1] + minutes[0]
            for earlier, later in itertools.pairwise(days)
        ]
        if not days or not gaps:
            return None
        return datetime.timedelta(minutes=max(gaps))


def parse_cron(text: str) -> CronSchedule:
    """`CronSchedule.parse`, as a function."""
    return CronSchedule.parse(text)


def _longest_month(month: int) -> int:
    # A leap year, so that the 29th of February counts as a day that exists.
    return calendar.monthrange(2024, month)[1]


def _listing(values: Sequence[int] | frozenset[int]) -> str:
    ordered = sorted(values)
    shown = ",".join(str(v) for v in ordered[:8])
    return shown + (",..." if len(ordered) > 8 else "")
