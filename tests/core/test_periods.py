"""One calendar for every domain: months in the billing zone, their bounds and closing windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowbill.periods import (
    Calendar,
    InvalidPeriod,
    PeriodInFuture,
    PeriodState,
    earliest_open,
    format_period,
    month_of,
    next_month,
    parse_period,
)

SHANGHAI = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)
months = st.dates(min_value=date(2000, 1, 1), max_value=date(2999, 11, 30)).map(
    lambda d: d.replace(day=1)
)


@given(months)
def test_a_period_is_written_and_read_back(period: date) -> None:
    assert parse_period(format_period(period)) == period


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-01", "2026-1", "x", "1999-12", ""])
def test_a_malformed_or_out_of_range_month_is_an_invalid_period(text: str) -> None:
    with pytest.raises(InvalidPeriod):
        parse_period(text)


@given(months, st.integers(-240, 240))
def test_next_month_moves_by_whole_months(period: date, months_later: int) -> None:
    moved = next_month(period, months_later)
    assert moved.day == 1
    assert (moved.year * 12 + moved.month) - (period.year * 12 + period.month) == months_later
    assert next_month(moved, -months_later) == period


@given(months)
def test_a_period_starts_where_the_one_before_ends(period: date) -> None:
    assert SHANGHAI.end(next_month(period, -1)) == SHANGHAI.start(period)
    assert SHANGHAI.period_of(SHANGHAI.start(period)) == period
    assert SHANGHAI.period_of(SHANGHAI.end(period) - timedelta(microseconds=1)) == period


def test_the_zone_decides_the_month_of_a_moment() -> None:
    moment = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 01:00 on 1 December in Shanghai
    assert SHANGHAI.period_of(moment) == date(2026, 12, 1)
    assert Calendar.of(time_zone="UTC", closing_days=3).period_of(moment) == date(2026, 11, 1)
    assert SHANGHAI.start(date(2026, 12, 1)) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert SHANGHAI.day_of(moment) == date(2026, 12, 1)


def test_a_month_is_open_through_its_closing_window() -> None:
    november = date(2026, 11, 1)
    closes = SHANGHAI.closable_at(november)
    assert closes == SHANGHAI.end(november) + timedelta(days=3)
    assert SHANGHAI.state(november, now=closes - timedelta(seconds=1)) is PeriodState.OPEN
    assert SHANGHAI.state(november, now=closes) is PeriodState.CLOSABLE
    assert earliest_open(closes - timedelta(seconds=1), SHANGHAI.zone, 3) == SHANGHAI.start(
        november
    )
    assert earliest_open(closes, SHANGHAI.zone, 3) == SHANGHAI.start(date(2026, 12, 1))


def test_a_month_named_by_a_caller_must_have_started() -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert SHANGHAI.started("2026-12", now=now) == date(2026, 12, 1)
    with pytest.raises(PeriodInFuture):
        SHANGHAI.started("2027-01", now=now)
    assert month_of(now, SHANGHAI.zone) == date(2026, 12, 1)
