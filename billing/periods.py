"""Billing periods: calendar months in the billing time zone, and their closing windows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from flowbill.errors import InvalidInput

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_month(text: str) -> date:
    """A billing month written `YYYY-MM`, as its first day."""
    match = _MONTH.match(text)
    if match is None or not 2000 <= int(match[1]) <= 2999:
        raise InvalidInput("a billing month is written YYYY-MM, e.g. 2026-11", value=text[:20])
    return date(int(match[1]), int(match[2]), 1)


def month_of(moment: datetime, zone: ZoneInfo) -> date:
    """The first day of the month a moment falls in, in the zone."""
    local = moment.astimezone(zone)
    return date(local.year, local.month, 1)


def next_month(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def month_start(period: date, zone: ZoneInfo) -> datetime:
    """The moment a period starts (UTC)."""
    return datetime(period.year, period.month, 1, tzinfo=zone).astimezone(UTC)


def closes_at(period: date, zone: ZoneInfo, closing_days: int) -> datetime:
    """When a period's closing window ends: later usage is booked in a later period."""
    return month_start(next_month(period), zone) + timedelta(days=closing_days)


def earliest_open(now: datetime, zone: ZoneInfo, closing_days: int) -> datetime:
    """The start of the earliest month usage can still be booked in (its window is open)."""
    current = month_of(now, zone)
    previous = month_of(month_start(current, zone) - timedelta(days=1), zone)
    if now < closes_at(previous, zone, closing_days):
        return month_start(previous, zone)
    return month_start(current, zone)


@dataclass(slots=True)
class Booking:
    """Decides the period an item is booked in, as of `now`: its month of use while that is
    open, else the current month (as an adjustment); and its day of use. Cached per minute
    of use (items are minutes; every time zone's offset is whole minutes)."""

    zone: ZoneInfo
    closing_days: int
    now: datetime
    _current: date | None = None
    _by_minute: dict[datetime, tuple[date, bool, date]] = field(default_factory=dict)

    def period(self, window_start: datetime) -> tuple[date, bool, date]:
        """(period booked in, whether this is an adjustment, day of use)."""
        found = self._by_minute.get(window_start)  # items start on the minute: one lookup
        if found is not None:
            return found
        minute = window_start.replace(second=0, microsecond=0)
        found = self._by_minute.get(minute)
        if found is None:
            local = minute.astimezone(self.zone)
            used = date(local.year, local.month, 1)
            if self.now < closes_at(used, self.zone, self.closing_days):
                found = (used, False, local.date())
            else:
                if self._current is None:
                    self._current = month_of(self.now, self.zone)
                found = (self._current, self._current != used, local.date())
            self._by_minute[minute] = found
        self._by_minute[window_start] = found
        return found
