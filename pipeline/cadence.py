"""When the periodic digests go out, and how a digest names the period it covers.

``[schedule]`` gives one *slot* per period in the site's time zone: every day at ``hour``
(daily), every ``weekday`` at ``hour`` (weekly), every month on ``day_of_month`` at ``hour``
(monthly). Slots are computed on local dates, so a weekly digest keeps its local hour across
daylight-saving changes. A slot's digest covers what was published up to the slot instant.

Everything here is pure: instants in, instants and words out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from pipeline.config_sections import WEEKDAYS, ScheduleSettings

__all__ = ["latest_slot", "next_slot", "period_label", "previous_slot"]

DASH = "\N{EN DASH}"  # between the ends of a range of days, as typeset


def _at(day: date, schedule: ScheduleSettings) -> datetime:
    """``hour`` o'clock on the local ``day``, as an aware UTC instant."""
    local = datetime.combine(day, time(schedule.hour), tzinfo=schedule.zone)
    return local.astimezone(UTC)


def _month_day(year: int, month: int, day: int) -> date:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return date(year, month, day)


def _step(day: date, frequency: str, schedule: ScheduleSettings, periods: int) -> date:
    """The slot day ``periods`` periods after (or before, if negative) the slot day ``day``."""
    if frequency == "daily":
        return day + timedelta(days=periods)
    if frequency == "weekly":
        return day + timedelta(weeks=periods)
    if frequency == "monthly":
        return _month_day(day.year, day.month + periods, schedule.day_of_month)
    raise ValueError(f"{frequency!r} is not a periodic frequency")


def latest_slot(frequency: str, schedule: ScheduleSettings, now: datetime) -> datetime:
    """The latest slot of ``frequency`` at or before ``now`` (aware), as a UTC instant.

    Raises ``ValueError`` for a frequency other than daily, weekly or monthly.
    """
    today = now.astimezone(schedule.zone).date()
    if frequency == "daily":
        day = today
    elif frequency == "weekly":
        wanted = WEEKDAYS.index(schedule.weekday.lower())
        day = today - timedelta(days=(today.weekday() - wanted) % 7)
    elif frequency == "monthly":
        day = _month_day(today.year, today.month, schedule.day_of_month)
    else:
        raise ValueError(f"{frequency!r} is not a periodic frequency")
    if _at(day, schedule) > now:
        day = _step(day, frequency, schedule, -1)
    return _at(day, schedule)


def next_slot(frequency: str, schedule: ScheduleSettings, now: datetime) -> datetime:
    """The first slot of ``frequency`` after ``now``."""
    last = latest_slot(frequency, schedule, now).astimezone(schedule.zone).date()
    return _at(_step(last, frequency, schedule, 1), schedule)


def previous_slot(frequency: str, schedule: ScheduleSettings, slot: datetime) -> datetime:
    """The slot one period before ``slot`` (itself a slot): where a full period starts."""
    day = slot.astimezone(schedule.zone).date()
    return _at(_step(day, frequency, schedule, -1), schedule)


def period_label(
    start: datetime, end: datetime, schedule: ScheduleSettings, *, end_day: bool = False
) -> str:
    """The local days a window ``(start, end]`` covers, as a reader says them.

    A window ending at a slot covers the days before the slot's day, so a weekly digest sent
    on Monday 30 November covers "23-29 November" (with an en dash); a daily one "4 December";
    a whole month "November 2026". Other spans: "28 November - 4 December", "28 December 2026 -
    3 January 2027". ``end_day`` counts the end's own day in (a window that ends between
    slots, when a reader leaves a periodic frequency).
    """
    zone = schedule.zone
    first = start.astimezone(zone).date()
    last = max(first, (end.astimezone(zone) - timedelta(days=0 if end_day else 1)).date())
    return _days(first, last)


@lru_cache(maxsize=1024)
def _days(first: date, last: date) -> str:
    # Cached: a run names the windows of many readers, most of them alike.
    if first == last:
        return f"{first.day} {first:%B}"
    if (
        first.day == 1
        and (last + timedelta(days=1)).day == 1
        and (first.year, first.month) == (last.year, last.month)
    ):
        return f"{first:%B %Y}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}{DASH}{last.day} {last:%B}"
    if first.year == last.year:
        return f"{first.day} {first:%B} {DASH} {last.day} {last:%B}"
    return f"{first.day} {first:%B %Y} {DASH} {last.day} {last:%B %Y}"
