"""SQL of the operator's rate card: the least price per MB per app category and currency,
optionally per sponsor, versioned in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class FloorRow:
    floor_id: int
    currency: str
    category: str
    sponsor_id: UUID | None
    min_unit_price: Decimal | None
    effective_from: datetime
    created_at: datetime


_FLOOR = "floor_id, currency, category, sponsor_id, min_unit_price, effective_from, created_at"


async def insert_floor(
    conn: Connection,
    *,
    currency: str,
    category: str,
    sponsor_id: UUID | None,
    min_unit_price: Decimal | None,
    effective_from: datetime,
) -> FloorRow | None:
    """The new version, or None when the line already has one starting at that moment."""
    async with conn.cursor(row_factory=class_row(FloorRow)) as cur:
        await cur.execute(
            f"""INSERT INTO price_floors
                    (currency, category, sponsor_id, min_unit_price, effective_from)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING RETURNING {_FLOOR}""",
            (currency, category, sponsor_id, min_unit_price, effective_from),
        )
        return await cur.fetchone()


async def latest_floor(
    conn: Connection, *, currency: str, category: str, sponsor_id: UUID | None
) -> FloorRow | None:
    """The last version of one line of the rate card (the category's, or a sponsor's)."""
    async with conn.cursor(row_factory=class_row(FloorRow)) as cur:
        await cur.execute(
            f"""SELECT {_FLOOR} FROM price_floors
                WHERE currency = %s AND category = %s AND sponsor_id IS NOT DISTINCT FROM %s
                ORDER BY effective_from DESC LIMIT 1""",
            (currency, category, sponsor_id),
        )
        return await cur.fetchone()


async def floors_in_force(
    conn: Connection,
    *,
    currency: str | None,
    categories: list[str] | None,
    sponsor_id: UUID,
    at: datetime,
) -> list[FloorRow]:
    """Per currency and category, the category's version in force at `at` and the sponsor's
    own one (each when there is one); of one currency and some categories, or of all."""
    async with conn.cursor(row_factory=class_row(FloorRow)) as cur:
        await cur.execute(
            f"""SELECT DISTINCT ON (currency, category, sponsor_id) {_FLOOR} FROM price_floors
                WHERE (%(currency)s::text IS NULL OR currency = %(currency)s)
                  AND (%(categories)s::text[] IS NULL OR category = ANY(%(categories)s))
                  AND (sponsor_id IS NULL OR sponsor_id = %(sponsor)s)
                  AND effective_from <= %(at)s
                ORDER BY currency, category, sponsor_id, effective_from DESC""",
            {"currency": currency, "categories": categories, "sponsor": sponsor_id, "at": at},
        )
        return await cur.fetchall()


async def floors(
    conn: Connection,
    *,
    currency: str | None,
    category: str | None,
    sponsor_id: UUID | None,
    after: int | None,
    limit: int,
) -> list[FloorRow]:
    """Every version, in the order they were set, optionally of one currency, category or
    sponsor, `limit` after the version `after`."""
    async with conn.cursor(row_factory=class_row(FloorRow)) as cur:
        await cur.execute(
            f"""SELECT {_FLOOR} FROM price_floors
                WHERE (%(currency)s::text IS NULL OR currency = %(currency)s)
                  AND (%(category)s::text IS NULL OR category = %(category)s)
                  AND (%(sponsor)s::uuid IS NULL OR sponsor_id = %(sponsor)s)
                  AND (%(after)s::bigint IS NULL OR floor_id > %(after)s)
                ORDER BY floor_id LIMIT %(limit)s""",
            {
                "currency": currency, "category": category, "sponsor": sponsor_id,
                "after": after, "limit": limit,
            },
        )  # fmt: skip
        return await cur.fetchall()
