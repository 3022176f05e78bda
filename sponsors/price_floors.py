"""The operator's rate card: the least price per MB a sponsor's policy may pay for traffic of
an app category, per currency, optionally per sponsor (a contract price that overrides the
category's floor for that sponsor).

Versioned in time like tariffs: a floor applies to policies created and terms changed from its
`effective_from` on; terms already set keep their prices. A currency without a floor for a
category takes no policy for that category, so a sponsor cannot escape the rate card by
naming an unusual currency. Services never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.errors import InvalidInput
from flowbill.paging import Page
from sponsors import price_floor_repository as repository
from sponsors.errors import (
    NoPriceFloor,
    NotAnAutomaker,
    PriceBelowFloor,
    PriceFloorClash,
    PriceFloorNotFound,
)
from sponsors.price_floor_repository import FloorRow
from sponsors.schemas import Category, PriceFloorPublic, PriceFloorSet, SponsorRateCard
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role

_CLOCK_SKEW = timedelta(seconds=5)
_SCOPE = "price-floors"


@dataclass(frozen=True, slots=True)
class Floor:
    """The least price per MB a sponsor pays for a category: the category's or its own."""

    category: str
    min_unit_price: Decimal
    sponsor_id: UUID | None
    effective_from: datetime


def binding_floors(rows: Iterable[FloorRow], sponsor_id: UUID) -> dict[str, Floor]:
    """Per category, the floor a sponsor is held to: its own one when it has one in force,
    else the category's. `rows` are the versions in force (`floors_in_force`)."""
    found: dict[str, Floor] = {}
    own: set[str] = set()
    for row in sorted(rows, key=lambda r: r.sponsor_id is None):
        if row.min_unit_price is None or row.category in own:
            continue
        if row.sponsor_id is None or row.sponsor_id == sponsor_id:
            found[row.category] = Floor(
                row.category, row.min_unit_price, row.sponsor_id, row.effective_from
            )
            if row.sponsor_id is not None:
                own.add(row.category)
    return found


async def require_floor(
    conn: Connection,
    *,
    sponsor_id: UUID,
    categories: set[str],
    currency: str,
    unit_price: Decimal,
    at: datetime,
) -> None:
    """Refuse terms whose unit price is below the floor, at `at`, of any category they pay
    for, naming the highest floor they miss."""
    rows = await repository.floors_in_force(
        conn, currency=currency, categories=sorted(categories), sponsor_id=sponsor_id, at=at
    )
    floors = binding_floors(rows, sponsor_id)
    missing = sorted(categories - set(floors))
    if missing:
        raise NoPriceFloor(
            f"the rate card has no {currency} floor for " + ", ".join(missing)
            + ": the operator sets one before policies can pay in this currency",
            currency=currency, categories=missing,
        )  # fmt: skip
    below = [f for f in floors.values() if unit_price < f.min_unit_price]
    if not below:
        return
    floor = max(below, key=lambda f: (f.min_unit_price, f.category))
    raise PriceBelowFloor(
        f"{unit_price} {currency} per MB is below the floor of {floor.min_unit_price}"
        f" {currency} per MB for {floor.category}",
        floor={
            "category": floor.category, "currency": currency,
            "min_unit_price": str(floor.min_unit_price),
            "sponsor_id": None if floor.sponsor_id is None else str(floor.sponsor_id),
            "effective_from": floor.effective_from.isoformat(),
        },
    )  # fmt: skip


async def _a_sponsor(conn: Connection, sponsor_id: UUID) -> None:
    try:
        role = (await tenants.get_tenant(conn, sponsor_id)).role
    except TenantNotFound:
        role = None
    if role != Role.SPONSOR:
        raise NotAnAutomaker(f"{sponsor_id} is not a sponsor")


async def _set(
    conn: Connection,
    *,
    currency: str,
    category: Category,
    sponsor_id: UUID | None,
    min_unit_price: Decimal | None,
    effective_from: datetime | None,
    now: datetime,
) -> PriceFloorPublic:
    effective = effective_from or now
    if effective < now - _CLOCK_SKEW:
        raise InvalidInput("`effective_from` must not be in the past")
    effective = max(effective, now)
    latest = await repository.latest_floor(
        conn, currency=currency, category=category.value, sponsor_id=sponsor_id
    )
    if (
        latest is not None
        and latest.effective_from <= effective
        and latest.min_unit_price == min_unit_price
    ):
        # Already so from then on: a repeated PUT changes nothing.
        return PriceFloorPublic.model_validate(latest)
    row = await repository.insert_floor(
        conn, currency=currency, category=category.value, sponsor_id=sponsor_id,
        min_unit_price=min_unit_price, effective_from=effective,
    )  # fmt: skip
    if row is None:
        raise PriceFloorClash(f"a {currency} {category.value} floor already starts at that moment")
    return PriceFloorPublic.model_validate(row)


async def set_floor(
    conn: Connection,
    *,
    currency: str,
    category: Category,
    sponsor_id: UUID | None = None,
    body: PriceFloorSet,
    now: datetime,
) -> PriceFloorPublic:
    """Set a category's floor in a currency, or one sponsor's own, from a moment on."""
    if sponsor_id is not None:
        await _a_sponsor(conn, sponsor_id)
    return await _set(
        conn, currency=currency, category=category, sponsor_id=sponsor_id,
        min_unit_price=body.min_unit_price, effective_from=body.effective_from, now=now,
    )  # fmt: skip


async def end_sponsor_floor(
    conn: Connection, *, currency: str, category: Category, sponsor_id: UUID, now: datetime
) -> PriceFloorPublic:
    """End a sponsor's own floor from now: the category's floor applies to it again."""
    latest = await repository.latest_floor(
        conn, currency=currency, category=category.value, sponsor_id=sponsor_id
    )
    if latest is None or latest.min_unit_price is None:
        raise PriceFloorNotFound(f"{sponsor_id} has no {currency} floor of its own for {category}")
    return await _set(
        conn, currency=currency, category=category, sponsor_id=sponsor_id,
        min_unit_price=None, effective_from=None, now=now,
    )  # fmt: skip


async def sponsor_rate_card(
    conn: Connection, *, sponsor_id: UUID, now: datetime
) -> SponsorRateCard:
    """The floors a sponsor is held to now, per currency and category: its own where it has
    one in force, else the category's. Other sponsors' own floors are never shown."""
    rows = await repository.floors_in_force(
        conn, currency=None, categories=None, sponsor_id=sponsor_id, at=now
    )
    binding: list[PriceFloorPublic] = []
    for currency in sorted({r.currency for r in rows}):
        held = binding_floors([r for r in rows if r.currency == currency], sponsor_id)
        binding += [
            PriceFloorPublic.model_validate(r)
            for r in rows
            if r.currency == currency
            and r.category in held
            and r.sponsor_id == held[r.category].sponsor_id
        ]
    return SponsorRateCard(as_of=now, floors=binding)


async def floor_page(
    conn: Connection,
    *,
    currency: str | None = None,
    category: Category | None = None,
    sponsor_id: UUID | None = None,
    limit: int,
    cursor: str | None,
) -> Page[PriceFloorPublic]:
    """Every version of the rate card in the order they were set, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (int,), scope=_SCOPE) if cursor else (None,)
    rows = await repository.floors(
        conn, currency=currency, category=None if category is None else category.value,
        sponsor_id=sponsor_id, after=after, limit=limit + 1,
    )  # fmt: skip
    return paging.page(
        [PriceFloorPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda f: (f.floor_id,), scope=_SCOPE,
    )  # fmt: skip
