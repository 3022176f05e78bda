"""Rating, periods, line ids and cursors: pure functions, checked against exact fractions."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.documents import rating, statements
from billing.documents.rating import RoundingRule, RoundingScope
from flowbill import paging
from flowbill.paging import InvalidCursor
from flowbill.periods import Calendar, InvalidPeriod, PeriodInFuture, parse_period
from flowbill.units import MB

byte_counts = st.integers(min_value=0, max_value=2**50)
units = st.integers(min_value=1, max_value=2**30)
prices = st.decimals(min_value=0, max_value=Decimal("99999999.999999"), places=6)
percents = st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4)
scopes = st.sampled_from(list(RoundingScope))


def half_up(value: Fraction) -> int:
    """The reference: round a non-negative fraction half-up to an integer."""
    return math.floor(value + Fraction(1, 2))


@given(byte_counts, units)
def test_round_up_is_the_next_multiple_of_the_unit(data_bytes: int, unit: int) -> None:
    rounded = rating.round_up(data_bytes, unit)
    assert rounded % unit == 0
    assert data_bytes <= rounded < data_bytes + unit


@given(st.lists(byte_counts, max_size=30), units, scopes)
def test_rated_bytes_by_scope(items: list[int], unit: int, scope: RoundingScope) -> None:
    rule = RoundingRule(unit_bytes=unit, scope=scope)
    rated = rating.rated_bytes(items, rule)
    assert rated >= sum(items)
    assert rated % unit == 0
    if scope is RoundingScope.LINE:
        assert rated - sum(items) < unit
    else:
        assert rated - sum(items) < unit * max(len(items), 1)
        # Per item never rates fewer bytes than per line.
        line = RoundingRule(unit_bytes=unit, scope=RoundingScope.LINE)
        assert rated >= rating.rated_bytes(items, line)
    # What the database's sums give is the same.
    item_rounded = sum(rating.round_up(b, unit) for b in items)
    assert (
        rating.rated_line_bytes(data_bytes=sum(items), item_rounded_bytes=item_rounded, rule=rule)
        == rated
    )


def test_unit_of_one_byte_changes_nothing() -> None:
    for scope in RoundingScope:
        assert rating.rated_bytes([1, 2, 1023], RoundingRule(1, scope)) == 1026
    assert rating.rated_bytes([1, 1025], RoundingRule(1024, RoundingScope.ITEM)) == 3072
    assert rating.rated_bytes([1, 1025], RoundingRule(1024, RoundingScope.LINE)) == 2048
    with pytest.raises(ValueError, match="unit"):
        RoundingRule(0, RoundingScope.ITEM)


@given(byte_counts)
def test_megabytes_are_exact(data_bytes: int) -> None:
    assert rating.megabytes(data_bytes) * MB == data_bytes
    shown = rating.display_mb(data_bytes)
    assert shown.as_tuple().exponent == -3
    assert shown == Decimal(half_up(Fraction(data_bytes * 1000, MB))) / 1000


@given(byte_counts, prices)
def test_amount_is_exact_then_half_up_once(data_bytes: int, price: Decimal) -> None:
    exact = Fraction(data_bytes) * Fraction(price) * 100 / MB
    assert rating.amount_minor(data_bytes, price, "CNY") == half_up(exact)
    assert rating.amount_minor(data_bytes, price, "JPY") == half_up(exact / 100)
    assert rating.amount_minor(data_bytes, price, "KWD") == half_up(exact * 10)


@given(byte_counts, prices, percents)
def test_share_rounds_the_exact_amount_once(
    data_bytes: int, price: Decimal, percent: Decimal
) -> None:
    exact = Fraction(data_bytes) * Fraction(price) * Fraction(percent) / MB
    share = rating.amount_minor(data_bytes, price, "CNY", percent=percent)
    assert share == half_up(exact)
    assert share <= rating.amount_minor(data_bytes, price, "CNY")
    assert rating.amount_minor(data_bytes, price, "CNY", percent=Decimal(100)) == (
        rating.amount_minor(data_bytes, price, "CNY")
    )


def test_half_up_at_exactly_half_a_fen() -> None:
    # 0.5 MB at 0.01 CNY/MB = 0.5 fen → 1 fen; 1.5 MB → 2 fen (half-up, not half-even).
    assert rating.amount_minor(MB // 2, Decimal("0.01"), "CNY") == 1
    assert rating.amount_minor(3 * MB // 2, Decimal("0.01"), "CNY") == 2
    assert rating.amount_minor(MB // 2 - 1, Decimal("0.01"), "CNY") == 0


def test_one_rounding_per_line_not_per_item() -> None:
    # Ten items of 100 KiB at 0.05 CNY/MB: each is 0.488 fen (0 when rounded alone), the
    # line is 4.88 fen: 5.
    items = [100 * 1024] * 10
    price = Decimal("0.05")
    assert sum(rating.amount_minor(b, price, "CNY") for b in items) == 0
    assert rating.amount_minor(sum(items), price, "CNY") == 5


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_major_units_format_round_trips(minor: int) -> None:
    assert Decimal(rating.format_major(minor, "CNY")) * 100 == minor
    assert rating.format_major(minor, "JPY") == str(minor)
    assert Decimal(rating.format_major(minor, "KWD")) * 1000 == minor


def test_major_units_format() -> None:
    assert rating.format_major(1234, "CNY") == "12.34"
    assert rating.format_major(5, "CNY") == "0.05"
    assert rating.format_major(0, "CNY") == "0.00"
    assert rating.format_major(-150, "CNY") == "-1.50"


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        rating.exact_amount(-1, Decimal(1))
    with pytest.raises(ValueError, match="negative"):
        rating.exact_amount(1, Decimal(1), percent=Decimal(101))
    with pytest.raises(ValueError, match="unit"):
        rating.round_up(-1, 1024)


# --- Periods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", "", "2026-01-01", "1999-12",
             "２０２６-01", "2026-01 ", "2026-01\n"],
)  # fmt: skip
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(InvalidPeriod):
        parse_period(text)


def test_periods_in_the_billing_zone() -> None:
    calendar = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)
    assert parse_period("2026-11") == date(2026, 11, 1)
    # 2026-10-31 16:00 UTC is already November in Shanghai.
    assert calendar.period_of(datetime(2026, 10, 31, 16, tzinfo=UTC)) == date(2026, 11, 1)
    assert calendar.period_of(datetime(2026, 10, 31, 15, 59, tzinfo=UTC)) == date(2026, 10, 1)
    closes = calendar.closable_at(date(2026, 12, 1))
    assert closes == datetime(2027, 1, 3, 16, tzinfo=UTC)  # 2027-01-04 00:00 in Shanghai
    assert calendar.state(date(2026, 12, 1), now=closes - timedelta(microseconds=1)) == "open"
    assert calendar.state(date(2026, 12, 1), now=closes) == "closable"
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert calendar.started("2026-11", now=now) == date(2026, 11, 1)
    with pytest.raises(PeriodInFuture):
        calendar.started("2026-12", now=now)


# --- Line ids and cursors -----------------------------------------------------------------


def test_line_ids_are_stable_and_readable() -> None:
    first = statements.line_id(
        policy_id=12, terms_from=datetime(2026, 1, 1, tzinfo=UTC), category="navigation",
        tariff_from=datetime(2000, 1, 1, tzinfo=UTC), used_in=None,
    )  # fmt: skip
    assert first == "12.1767225600000000.navigation.946684800000000.u"
    adjustment = statements.line_id(
        policy_id=12, terms_from=datetime(2026, 1, 1, tzinfo=UTC), category="navigation",
        tariff_from=datetime(2000, 1, 1, tzinfo=UTC), used_in=date(2026, 9, 1),
    )  # fmt: skip
    assert adjustment.endswith(".202609")


def _cursor(key: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def test_cursors_are_checked() -> None:
    line = "1.0.navigation.0.u"
    good = ["1.0.navigation.0.u", "2026-10-10T04:00:00+00:00", "89860000000000000001", 1, 2, "a"]

    def decode(cursor: str) -> tuple[object, ...]:
        return paging.decode_cursor(cursor, statements.ITEM_KEY, scope=line)

    assert decode(_cursor(good)) == (
        datetime(2026, 10, 10, 4, tzinfo=UTC), "89860000000000000001", 1, 2, "a"
    )  # fmt: skip
    bad: list[object] = [
        [*good[:1], "yesterday", *good[2:]],
        ["2.0.navigation.0.u", *good[1:]],
        [*good[:4], True, *good[5:]],
        [*good[:4], 2.5, *good[5:]],
        [*good[:5], 7],
        [*good[:1], "2026-10-10T04:00:00", *good[2:]],
        good[:5],
        {"k": 1},
    ]
    for key in bad:
        with pytest.raises(InvalidCursor):
            decode(_cursor(key if isinstance(key, list) else [key]))
    for garbage in ["***", "e30", "x" * 601, _cursor(good)[:-3]]:
        with pytest.raises(InvalidCursor):
            decode(garbage)
