"""Which floor binds a sponsor: a pure rule, checked over random rate cards."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from sponsors.price_floor_repository import FloorRow
from sponsors.price_floors import binding_floors

ME, OTHER = UUID(int=1), UUID(int=2)
CATEGORIES = ["music", "fm", "video"]
AT = datetime(2026, 1, 1, tzinfo=UTC)

prices = st.decimals(min_value=0, max_value=10, places=6)
# Per category: the category's floor (or none), my own (none, ended, or a price), another's.
lines = st.tuples(st.none() | prices, st.none() | st.just("ended") | prices, st.none() | prices)


def row(floor_id: int, category: str, sponsor: UUID | None, price: Decimal | None) -> FloorRow:
    return FloorRow(floor_id, "CNY", category, sponsor, price, AT, AT)


@given(st.lists(lines, min_size=len(CATEGORIES), max_size=len(CATEGORIES)))
def test_my_own_floor_overrides_the_category_s_and_nobody_else_s_counts(
    card: list[tuple[Decimal | None, Decimal | str | None, Decimal | None]],
) -> None:
    rows = []
    for n, (category, (general, own, others)) in enumerate(zip(CATEGORIES, card, strict=True)):
        if general is not None:
            rows.append(row(3 * n, category, None, general))
        if own is not None:
            rows.append(row(3 * n + 1, category, ME, None if own == "ended" else Decimal(own)))
        if others is not None:
            rows.append(row(3 * n + 2, category, OTHER, others))
    found = binding_floors(reversed(rows), ME)
    for category, (general, own, _) in zip(CATEGORIES, card, strict=True):
        expected = own if isinstance(own, Decimal) else general
        if expected is None:
            assert category not in found
        else:
            floor = found[category]
            assert floor.min_unit_price == expected
            assert floor.sponsor_id == (ME if isinstance(own, Decimal) else None)
