"""Periods as statements see them: a month named `YYYY-MM` by a caller, checked, and where it
stands (open, or past its closing window). The closing rule itself is the allocation run's
(`billing.periods.closes_at`), so that a month is invoiced exactly when the run stops booking
into it. Pure functions, no I/O."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from billing import periods
from billing.errors import InvalidPeriod, PeriodInFuture
from flowbill.settings import Settings

_PERIOD = re.compile(r"^([0-9]{4})-([0-9]{2})$")
FIRST_YEAR = 2000


class PeriodState(enum.StrEnum):
    # Usage may still be booked in the period (it is running, or in its closing window).
    OPEN = "open"
    # The closing window has passed: nothing more is booked in it.
    CLOSABLE = "closable"


def parse_period(text: str) -> date:
    """`2026-11` → date(2026, 11, 1); anything else is an `invalid-period` problem."""
    found = _PERIOD.fullmatch(text)
    if found is None:
        raise InvalidPeriod("a period is a month written YYYY-MM, e.g. 2026-11", period=text[:20])
    year, month = int(found.group(1)), int(found.group(2))
    if not 1 <= month <= 12:
        raise InvalidPeriod("the month must be 01 to 12", period=text)
    if year < FIRST_YEAR:
        raise InvalidPeriod(f"periods start in {FIRST_YEAR}", period=text)
    return date(year, month, 1)


def format_period(period: date) -> str:
    return f"{period.year:04d}-{period.month:02d}"


def period_start(period: date, zone: ZoneInfo) -> datetime:
    """The first instant of the period."""
    return periods.month_start(period, zone)


def period_end(period: date, zone: ZoneInfo) -> datetime:
    """The first instant after the period."""
    return periods.month_start(periods.next_month(period), zone)


@dataclass(frozen=True, slots=True)
class Calendar:
    """The billing time zone and the closing window after each period, in days."""

    zone: ZoneInfo
    closing_days: int

    @classmethod
    def of(cls, *, time_zone: str, closing_days: int) -> Calendar:
        return cls(zone=ZoneInfo(time_zone), closing_days=closing_days)

    @classmethod
    def from_settings(cls, settings: Settings) -> Calendar:
        return cls.of(
            time_zone=settings.billing_time_zone, closing_days=settings.billing_closing_days
        )

    @property
    def time_zone(self) -> str:
        return self.zone.key

    def period_of(self, instant: datetime) -> date:
        return periods.month_of(instant, self.zone)

    def closable_at(self, period: date) -> datetime:
        """When the period's closing window ends: from then on it may be invoiced."""
        return periods.closes_at(period, self.zone, self.closing_days)

    def state(self, period: date, *, now: datetime) -> PeriodState:
        return PeriodState.CLOSABLE if now >= self.closable_at(period) else PeriodState.OPEN

    def started(self, text: str, *, now: datetime) -> date:
        """A period named by a caller: well-formed and not in the future."""
        period = parse_period(text)
        if period > self.period_of(now):
            raise PeriodInFuture(f"{text} has not started yet", period=text)
        return period
