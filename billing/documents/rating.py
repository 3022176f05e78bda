"""Rating: bytes to money. Pure functions, no I/O.

Bytes are integers; 1 MB = 1,048,576 bytes. Unit prices are decimals per MB in a currency.
Before pricing, bytes are rounded UP to the tariff's rounding unit, either each item's bytes
(scope `item`) or a line's total (scope `line`). A line's amount is computed exactly and
rounded half-up to integer minor units once, for the whole line: never per item, and sums of
lines are never rounded again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

from flowbill.units import MB

HUNDRED = Decimal(100)

# Every product here is exact: bytes (< 2^63, 19 digits) times a price (14 digits) times a
# percent (7 digits) times 10^3, divided by 2^20 and by 100 (which add at most 22 digits).
_EXACT = Context(prec=100, rounding=ROUND_HALF_UP)
_ONE = Decimal(1)
_MB_DISPLAY = Decimal("0.001")

# ISO 4217 currencies whose minor unit is not a hundredth.
_MINOR_DIGITS = {
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
}


class RoundingScope(enum.StrEnum):
    ITEM = "item"
    LINE = "line"


@dataclass(frozen=True, slots=True)
class RoundingRule:
    """Round bytes up to a multiple of `unit_bytes`, per item or per line."""

    unit_bytes: int
    scope: RoundingScope

    def __post_init__(self) -> None:
        if self.unit_bytes < 1:
            raise ValueError("the rounding unit is at least one byte")


def round_up(data_bytes: int, unit_bytes: int) -> int:
    """The smallest multiple of the unit that is at least `data_bytes` (0 stays 0)."""
    if data_bytes < 0 or unit_bytes < 1:
        raise ValueError("bytes must be >= 0 and the unit >= 1")
    return -(-data_bytes // unit_bytes) * unit_bytes


def rated_bytes(items: Iterable[int], rule: RoundingRule) -> int:
    """The bytes a line is priced at: its items' bytes rounded by the rule."""
    if rule.scope is RoundingScope.ITEM:
        return sum(round_up(b, rule.unit_bytes) for b in items)
    return round_up(sum(items), rule.unit_bytes)


def rated_line_bytes(*, data_bytes: int, item_rounded_bytes: int, rule: RoundingRule) -> int:
    """`rated_bytes` from a line's sums, as the database gives them: its bytes, and the sum of
    its items' bytes each rounded up to the unit."""
    if rule.scope is RoundingScope.ITEM:
        return item_rounded_bytes
    return round_up(data_bytes, rule.unit_bytes)


def megabytes(data_bytes: int) -> Decimal:
    """Exact MB (a power of two divides exactly in decimal)."""
    return _EXACT.divide(Decimal(data_bytes), Decimal(MB))


def display_mb(data_bytes: int) -> Decimal:
    """MB with three decimals, half-up, for display only (amounts use exact MB)."""
    return megabytes(data_bytes).quantize(_MB_DISPLAY, rounding=ROUND_HALF_UP, context=_EXACT)


def minor_digits(currency: str) -> int:
    """Decimal places of the currency's minor unit (2 for CNY: fen)."""
    return _MINOR_DIGITS.get(currency, 2)


def exact_amount(data_bytes: int, unit_price: Decimal, *, percent: Decimal = HUNDRED) -> Decimal:
    """The exact amount in major units for bytes at a price per MB (times percent/100)."""
    if data_bytes < 0 or unit_price < 0 or not 0 <= percent <= HUNDRED:
        raise ValueError("bytes, price and percent must not be negative (percent <= 100)")
    amount = _EXACT.multiply(megabytes(data_bytes), unit_price)
    return _EXACT.divide(_EXACT.multiply(amount, percent), HUNDRED)


def to_minor(amount: Decimal, currency: str) -> int:
    """An exact amount in major units, rounded half-up once to integer minor units."""
    scaled = _EXACT.scaleb(amount, minor_digits(currency))
    return int(scaled.quantize(_ONE, rounding=ROUND_HALF_UP, context=_EXACT))


def amount_minor(
    data_bytes: int, unit_price: Decimal, currency: str, *, percent: Decimal = HUNDRED
) -> int:
    """A line's amount in minor units: exact, then rounded half-up once."""
    return to_minor(exact_amount(data_bytes, unit_price, percent=percent), currency)


def format_major(minor: int, currency: str) -> str:
    """Minor units as a decimal string in major units: 1234 CNY → "12.34"."""
    digits = minor_digits(currency)
    return str(Decimal(minor).scaleb(-digits)) if digits else str(minor)


def rate_line(
    *,
    data_bytes: int,
    item_rounded_bytes: int,
    rule: RoundingRule,
    unit_price: Decimal,
    currency: str,
) -> tuple[int, int]:
    """(rated bytes, amount in minor units) of a statement line."""
    rated = rated_line_bytes(
        data_bytes=data_bytes, item_rounded_bytes=item_rounded_bytes, rule=rule
    )
    return rated, amount_minor(rated, unit_price, currency)
