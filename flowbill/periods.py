"""Billing periods and the calendar they live in: calendar months in the billing time zone
(`FLOWBILL_BILLING_TIME_ZONE`, Asia/Shanghai by default), each with a closing window after it
during which late usage is still booked into it. A period is written `YYYY-MM` and held as the
`date` of its first day. Pure functions, no I/O; every domain takes its months from here."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from flowbill.errors import InvalidInput
from flowbill.settings import Settings

_PERIOD = re.compile(r"^([0-9]{4})-([0-9]{2})$")
FIRST_YEAR = 2000
LAST_YEAR = 2999


class InvalidPeriod(InvalidInput):
    type_ = "invalid-period"
    title = "Invalid billing period"


class PeriodInFuture(InvalidInput):
    type_ = "period-in-future"
    title = "The billing period has not started"


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
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidPeriod(f"periods run from {FIRST_YEAR} to {LAST_YEAR}", period=text)
    return date(year, month, 1)


def format_period(period: date) -> str:
    return f"{period.year:04d}-{period.month:02d}"


def month_of(moment: datetime, zone: ZoneInfo) -> date:
    """The first day of the month a moment falls in, in the zone."""
    local = moment.astimezone(zone)
    return date(local.year, local.month, 1)


def next_month(period: date, months: int = 1) -> date:
    """The period `months` after this one (before it, for a negative count)."""
    index = period.year * 12 + period.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_start(period: date, zone: ZoneInfo) -> datetime:
    """The moment a period starts (UTC)."""
    return datetime(period.year, period.month, 1, tzinfo=zone).astimezone(UTC)


def month_end(period: date, zone: ZoneInfo) -> datetime:
    """The first moment after the period (UTC)."""
    return month_start(next_month(period), zone)


def closes_at(period: date, zone: ZoneInfo, closing_days: int) -> datetime:
    """When a period's closing window ends: later usage is booked in a later period."""
    return month_end(period, zone) + timedelta(days=closing_days)


def earliest_open(now: datetime, zone: ZoneInfo, closing_days: int) -> datetime:
    """The start of the earliest month usage can still be booked in (its window is open)."""
    current = month_of(now, zone)
    previous = next_month(current, -1)
    if now < closes_at(previous, zone, closing_days):
        return month_start(previous, zone)
    return month_start(current, zone)


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
        return month_of(instant, self.zone)

    def start(self, period: date) -> datetime:
        """The first instant of the period (UTC)."""
        return month_start(period, self.zone)

    def end(self, period: date) -> datetime:
        """The first instant after the period (UTC)."""
        return month_end(period, self.zone)

    def day_of(self, instant: datetime) -> date:
        """The calendar day an instant falls on, in the zone."""
        return instant.astimezone(self.zone).date()

    def closable_at(self, period: date) -> datetime:
        """When the period's closing window ends: from then on it may be invoiced."""
        return closes_at(period, self.zone, self.closing_days)

    def state(self, period: date, *, now: datetime) -> PeriodState:
        return PeriodState.CLOSABLE if now >= self.closable_at(period) else PeriodState.OPEN

    def started(self, text: str, *, now: datetime) -> date:
        """A period named by a caller: well-formed and not in the future."""
        period = parse_period(text)
        if period > self.period_of(now):
            raise PeriodInFuture(f"{text} has not started yet", period=text)
        return period
