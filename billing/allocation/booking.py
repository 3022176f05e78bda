"""Which period the allocation run books an item in (the calendar itself is `flowbill.periods`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from flowbill.periods import Calendar


@dataclass(slots=True)
class Booking:
    """Decides the period an item is booked in, as of `now`: its month of use while that is
    open, else the current month (as an adjustment); and its day of use. Cached per minute
    of use (items are minutes; every time zone's offset is whole minutes)."""

    calendar: Calendar
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
            local = minute.astimezone(self.calendar.zone)
            used = date(local.year, local.month, 1)
            if self.now < self.calendar.closable_at(used):
                found = (used, False, local.date())
            else:
                if self._current is None:
                    self._current = self.calendar.period_of(self.now)
                found = (self._current, self._current != used, local.date())
            self._by_minute[minute] = found
        self._by_minute[window_start] = found
        return found
