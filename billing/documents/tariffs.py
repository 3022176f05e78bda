"""The operator's tariff: carrier wholesale cost, the user's overage price and rounding,
versioned in time like policies (a new tariff never reprices what was already rated)."""

from __future__ import annotations

from datetime import datetime, timedelta

from billing.documents.repository import tariffs as repository
from billing.documents.schemas import TariffCreate, TariffPublic
from flowbill import paging
from flowbill.db import Connection
from flowbill.errors import Conflict, InvalidInput
from flowbill.paging import Page

_CLOCK_SKEW = timedelta(seconds=5)


async def add_tariff(conn: Connection, *, body: TariffCreate, now: datetime) -> TariffPublic:
    """A tariff from a moment on (default now, never in the past)."""
    effective = body.effective_from or now
    if effective < now - _CLOCK_SKEW:
        raise InvalidInput("`effective_from` must not be in the past")
    effective = max(effective, now)
    if any(t.effective_from == effective for t in await repository.tariffs(conn)):
        raise Conflict("a tariff already starts at that moment")
    row = await repository.insert_tariff(
        conn,
        repository.TariffRow(
            effective_from=effective, currency=body.currency,
            wholesale_per_mb=body.wholesale_per_mb, overage_per_mb=body.overage_per_mb,
            rounding_unit_bytes=body.rounding_unit_bytes,
            rounding_scope=body.rounding_scope.value, created_at=now,
        ),
    )  # fmt: skip
    return TariffPublic.model_validate(row)


async def tariffs(conn: Connection) -> list[TariffPublic]:
    """Every tariff, oldest first: each applies from its start until the next one's."""
    return [TariffPublic.model_validate(r) for r in await repository.tariffs(conn)]


async def tariff_page(conn: Connection, *, limit: int, cursor: str | None) -> Page[TariffPublic]:
    """Every tariff, oldest first, a page at a time (there are few, so they are read whole)."""
    (after,) = paging.decode_cursor(cursor, (datetime,), scope="tariffs") if cursor else (None,)
    later = [r for r in await repository.tariffs(conn) if after is None or r.effective_from > after]
    return paging.page(
        [TariffPublic.model_validate(r) for r in later[: limit + 1]],
        limit=limit, key=lambda t: (t.effective_from,), scope="tariffs",
    )  # fmt: skip
