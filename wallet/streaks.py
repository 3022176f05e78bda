"""The check-in tool's rules: days of the billing calendar, streaks and their rewards.

Pure functions, no I/O: the service stores check-ins, these decide what each is worth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flowbill.periods import Calendar
from flowbill.units import MB


@dataclass(frozen=True, slots=True)
class CheckInRules:
    """A reward every day of a streak; `streak_bytes` overrides some days of the cycle.

    The default: 1 MB a day, 5 MB on the 3rd day in a row, 10 MB on the 7th; after the 7th
    day the cycle starts again (the 8th day in a row is worth what the 1st was).
    """

    cycle_days: int = 7
    daily_bytes: int = 1 * MB
    streak_bytes: Mapping[int, int] = field(default_factory=lambda: {3: 5 * MB, 7: 10 * MB})
    validity_days: int = 730

    def __post_init__(self) -> None:
        if not 1 <= self.cycle_days <= 366:
            raise ValueError("cycle_days must be from 1 to 366")
        if self.daily_bytes <= 0:
            raise ValueError("daily_bytes must be positive")
        for day, reward in self.streak_bytes.items():
            if not 1 <= day <= self.cycle_days:
                raise ValueError(f"streak day {day} is outside the {self.cycle_days}-day cycle")
            if reward <= 0:
                raise ValueError("streak rewards must be positive")
        if not 1 <= self.validity_days <= 730:
            raise ValueError("validity_days must be from 1 to 730")


def check_in_day(now: datetime, calendar: Calendar) -> date:
    """The calendar day a check-in at `now` counts for (in the calendar's zone)."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    return calendar.day_of(now)


def next_streak(last_day: date | None, last_streak: int, today: date) -> int:
    """The streak after checking in today, given the last check-in before today."""
    if last_day is not None and last_day == today - timedelta(days=1):
        return last_streak + 1
    return 1


def reward(streak: int, rules: CheckInRules) -> int:
    """Bytes granted for the `streak`-th day in a row."""
    if streak < 1:
        raise ValueError("a streak starts at 1")
    day_of_cycle = (streak - 1) % rules.cycle_days + 1
    return rules.streak_bytes.get(day_of_cycle, rules.daily_bytes)
