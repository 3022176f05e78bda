"""SQL of revenue share: the operator's rules, and the user-paid bytes of their apps booked in a
period (see `rated` for how rows are rated)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from psycopg.rows import class_row

from billing.documents.repository.rated import ITEM_ROUNDED, TARIFF_CTE, TARIFF_JOIN, USED_IN
from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class ShareLineRow:
    partner_id: UUID
    rule_id: int
    percent: Decimal
    app: str
    used_in: date | None
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    currency: str | None
    overage_price: Decimal | None
    overage_bytes: int
    overage_item_rounded: int | None
    wallet_bytes: int


async def share_lines(
    conn: Connection, *, period: date, tz: str, partner_id: UUID | None
) -> list[ShareLineRow]:
    """The user-paid bytes of each rule's apps booked in the period, per app and tariff."""
    only = "AND r.partner_id = %(partner)s" if partner_id is not None else ""
    user_paid = "a.payer_kind = 'overage' AND a.payer_id IS NOT NULL"
    query = f"""
        WITH {TARIFF_CTE}
        SELECT r.partner_id, r.rule_id, r.percent, a.app, {USED_IN} AS used_in,
               t.effective_from AS tariff_from, t.unit, t.scope, t.currency,
               t.overage_per_mb AS overage_price,
               coalesce(sum(a.bytes) FILTER (WHERE {user_paid}), 0)::bigint AS overage_bytes,
               coalesce(sum({ITEM_ROUNDED}) FILTER (WHERE {user_paid}), 0)::bigint
                   AS overage_item_rounded,
               coalesce(sum(a.bytes) FILTER (WHERE a.payer_kind = 'wallet'), 0)::bigint
                   AS wallet_bytes
          FROM allocations a
          JOIN revenue_share_rules r
            ON a.app = ANY (r.apps) AND a.window_start >= r.valid_from
           AND (r.valid_until IS NULL OR a.window_start < r.valid_until)
          {TARIFF_JOIN}
         WHERE a.payer_kind IN ('wallet', 'overage') AND a.period = %(period)s {only}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
         ORDER BY 1, 2, 4, 5 NULLS FIRST, 6
    """
    async with conn.cursor(row_factory=class_row(ShareLineRow)) as cur:
        await cur.execute(query, {"period": period, "tz": tz, "partner": partner_id})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule_id: int
    partner_id: UUID
    name: str
    apps: list[str]
    percent: Decimal
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime
    updated_at: datetime


_RULE_COLUMNS = (
    "rule_id, partner_id, name, apps, percent, valid_from, valid_until, created_at, updated_at"
)


async def lock_partner_rules(conn: Connection, partner_id: UUID) -> None:
    """Serialise rule changes of one partner (the overlap check reads, then writes)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('flowbill:share-rules:' || %s, 0))",
        (str(partner_id),),
    )


async def overlapping_rule(
    conn: Connection,
    *,
    partner_id: UUID,
    apps: Sequence[str],
    valid_from: datetime,
    valid_until: datetime | None,
    other_than: int | None,
) -> int | None:
    cur = await conn.execute(
        """
        SELECT rule_id FROM revenue_share_rules
         WHERE partner_id = %(partner)s AND apps && %(apps)s::text[]
           AND rule_id IS DISTINCT FROM %(other)s
           AND tstzrange(valid_from, valid_until) && tstzrange(%(from)s, %(until)s)
         ORDER BY rule_id LIMIT 1
        """,
        {
            "partner": partner_id,
            "apps": list(apps),
            "other": other_than,
            "from": valid_from,
            "until": valid_until,
        },
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def insert_rule(
    conn: Connection,
    *,
    partner_id: UUID,
    name: str,
    apps: Sequence[str],
    percent: Decimal,
    valid_from: datetime,
    valid_until: datetime | None,
) -> RuleRow:
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"""
            INSERT INTO revenue_share_rules (partner_id, name, apps, percent, valid_from,
                                             valid_until)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_RULE_COLUMNS}
            """,
            (partner_id, name, list(apps), percent, valid_from, valid_until),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_rule(conn: Connection, rule_id: int, *, for_update: bool = False) -> RuleRow | None:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"SELECT {_RULE_COLUMNS} FROM revenue_share_rules WHERE rule_id = %s{lock}",
            (rule_id,),
        )
        return await cur.fetchone()


async def list_rules(
    conn: Connection, *, partner_id: UUID | None, after_id: int | None, limit: int
) -> list[RuleRow]:
    """Rules in id order, after `after_id`."""
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_RULE_COLUMNS} FROM revenue_share_rules
             WHERE (%(partner)s::uuid IS NULL OR partner_id = %(partner)s)
               AND (%(after)s::bigint IS NULL OR rule_id > %(after)s)
             ORDER BY rule_id LIMIT %(limit)s
            """,
            {"partner": partner_id, "after": after_id, "limit": limit},
        )
        return await cur.fetchall()


async def update_rule(
    conn: Connection, *, rule_id: int, name: str, valid_until: datetime | None
) -> RuleRow:
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"""
            UPDATE revenue_share_rules SET name = %s, valid_until = %s, updated_at = now()
             WHERE rule_id = %s RETURNING {_RULE_COLUMNS}
            """,
            (name, valid_until, rule_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def delete_rule(conn: Connection, rule_id: int) -> None:
    await conn.execute("DELETE FROM revenue_share_rules WHERE rule_id = %s", (rule_id,))
