"""SQL of the margin report: every byte booked in a period, per tariff and payer kind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from psycopg.rows import class_row

from billing.documents.repository.rated import ITEM_ROUNDED, TARIFF_CTE, TARIFF_JOIN
from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class WholesaleRow:
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    currency: str | None
    wholesale_price: Decimal | None
    payer_kind: str
    without_payer: bool
    bytes: int
    item_rounded: int | None


async def bytes_by_tariff(conn: Connection, *, period: date) -> list[WholesaleRow]:
    """Every byte booked in the period, per tariff and payer kind."""
    query = f"""
        WITH {TARIFF_CTE}
        SELECT t.effective_from AS tariff_from, t.unit, t.scope, t.currency,
               t.wholesale_per_mb AS wholesale_price, a.payer_kind,
               a.payer_id IS NULL AS without_payer,
               sum(a.bytes)::bigint AS bytes, sum({ITEM_ROUNDED})::bigint AS item_rounded
          FROM allocations a {TARIFF_JOIN}
         WHERE a.period = %(period)s
         GROUP BY 1, 2, 3, 4, 5, 6, 7
         ORDER BY 1, 6, 7
    """
    async with conn.cursor(row_factory=class_row(WholesaleRow)) as cur:
        await cur.execute(query, {"period": period})
        return await cur.fetchall()
