"""SQL of statements: a period's allocation rows grouped into a sponsor's or a driver's lines
(see `rated` for how rows are rated), and the rows behind a sponsor's line, page by page.

A sponsor's line names its policy and terms; their name, currency and unit price are the
sponsors domain's, read through its service. The device report behind each row is ingest's,
read through its view `ingest_stored_reports` (docs/protocol.md, "Read contract").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.rows import class_row

from billing.documents.repository.rated import ITEM_ROUNDED, TARIFF_CTE, TARIFF_JOIN, USED_IN
from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class SponsorLineRow:
    payer_id: UUID
    policy_id: int
    terms_from: datetime
    category: str
    used_in: date | None
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    items: int
    bytes: int
    item_rounded: int | None


async def sponsor_lines(
    conn: Connection, *, period: date, tz: str, sponsor_id: UUID | None
) -> list[SponsorLineRow]:
    """The lines of one sponsor's statement (or of every sponsor's, for the margin)."""
    only = "AND a.payer_id = %(sponsor)s" if sponsor_id is not None else ""
    query = f"""
        WITH {TARIFF_CTE}
        SELECT a.payer_id, a.policy_id, a.terms_from, a.category, {USED_IN} AS used_in,
               t.effective_from AS tariff_from, t.unit, t.scope,
               count(*) AS items, sum(a.bytes)::bigint AS bytes,
               sum({ITEM_ROUNDED})::bigint AS item_rounded
          FROM allocations a {TARIFF_JOIN}
         WHERE a.payer_kind = 'sponsor' AND a.period = %(period)s {only}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
         ORDER BY 1, 5 NULLS FIRST, 2, 3, 4, 6
    """
    async with conn.cursor(row_factory=class_row(SponsorLineRow)) as cur:
        await cur.execute(query, {"period": period, "tz": tz, "sponsor": sponsor_id})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class DriverLineRow:
    payer_id: UUID | None
    iccid: str
    category: str
    used_in: date | None
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    currency: str | None
    overage_price: Decimal | None
    wallet_bytes: int
    overage_bytes: int
    overage_item_rounded: int | None


async def driver_lines(
    conn: Connection, *, period: date, tz: str, driver_id: UUID | None
) -> list[DriverLineRow]:
    """The user's share per SIM and category (one driver's, or everyone's for the margin;
    overage of SIMs without a driver has payer NULL)."""
    only = "AND a.payer_id = %(driver)s" if driver_id is not None else ""
    query = f"""
        WITH {TARIFF_CTE}
        SELECT a.payer_id, a.iccid, a.category, {USED_IN} AS used_in,
               t.effective_from AS tariff_from, t.unit, t.scope, t.currency,
               t.overage_per_mb AS overage_price,
               coalesce(sum(a.bytes) FILTER (WHERE a.payer_kind = 'wallet'), 0)::bigint
                   AS wallet_bytes,
               coalesce(sum(a.bytes) FILTER (WHERE a.payer_kind = 'overage'), 0)::bigint
                   AS overage_bytes,
               coalesce(sum({ITEM_ROUNDED}) FILTER (WHERE a.payer_kind = 'overage'), 0)::bigint
                   AS overage_item_rounded
          FROM allocations a {TARIFF_JOIN}
         WHERE a.payer_kind IN ('wallet', 'overage') AND a.period = %(period)s {only}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
         ORDER BY 1, 2, 4 NULLS FIRST, 3, 5
    """
    async with conn.cursor(row_factory=class_row(DriverLineRow)) as cur:
        await cur.execute(query, {"period": period, "tz": tz, "driver": driver_id})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class DrillDownRow:
    window_start: datetime
    window_end: datetime | None
    iccid: str
    boot: int
    seq: int
    app: str
    bytes: int
    received_at: datetime | None
    batch_id: int


@dataclass(frozen=True, slots=True)
class LineKey:
    """What selects a sponsor statement line's allocation rows."""

    sponsor_id: UUID
    period: date
    policy_id: int
    terms_from: datetime
    category: str
    # For an adjustment line: the period of use, as instants [from, until).
    used_from: datetime | None
    used_until: datetime | None
    tariff_from: datetime
    tariff_until: datetime | None


async def line_items(
    conn: Connection,
    key: LineKey,
    *,
    after: tuple[datetime, str, int, int, str] | None,
    limit: int,
) -> list[DrillDownRow]:
    """A page of a line's usage items with their device reports, in key order."""
    conditions = [
        "a.payer_kind = 'sponsor'",
        "a.payer_id = %(sponsor)s",
        "a.period = %(period)s",
        "a.policy_id = %(policy)s",
        "a.terms_from = %(terms)s",
        "a.category = %(category)s",
        "a.window_start >= %(tariff_from)s",
    ]
    if key.tariff_until is not None:
        conditions.append("a.window_start < %(tariff_until)s")
    if key.used_from is None:
        conditions.append("NOT a.adjustment")
    else:
        conditions += [
            "a.adjustment",
            "a.window_start >= %(used_from)s",
            "a.window_start < %(used_until)s",
        ]
    if after is not None:
        conditions.append(
            "(a.window_start, a.iccid, a.boot, a.seq, a.app) > (%(ws)s, %(iccid)s, %(boot)s,"
            " %(seq)s, %(app)s)"
        )
    params: dict[str, Any] = {
        "sponsor": key.sponsor_id,
        "period": key.period,
        "policy": key.policy_id,
        "terms": key.terms_from,
        "category": key.category,
        "tariff_from": key.tariff_from,
        "tariff_until": key.tariff_until,
        "used_from": key.used_from,
        "used_until": key.used_until,
        "limit": limit,
    }
    if after is not None:
        params.update(zip(("ws", "iccid", "boot", "seq", "app"), after, strict=True))
    query = f"""
        SELECT a.window_start, r.window_end, a.iccid, a.boot, a.seq, a.app, a.bytes,
               r.received_at, a.batch_id
          FROM allocations a
          LEFT JOIN ingest_stored_reports r
                 ON r.iccid = a.iccid AND r.boot = a.boot AND r.seq = a.seq
                AND r.window_start = a.window_start
         WHERE {" AND ".join(conditions)}
         ORDER BY a.window_start, a.iccid, a.boot, a.seq, a.app
         LIMIT %(limit)s
    """
    async with conn.cursor(row_factory=class_row(DrillDownRow)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
