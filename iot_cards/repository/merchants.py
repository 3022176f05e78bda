"""SQL of merchants' selling: seller profiles, retail prices of the wholesale plans, and the
stock a store shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class MerchantPlanRow:
    plan_id: UUID
    name: str
    kind: str
    data_bytes: int
    months: int
    currency: str
    wholesale_minor: int
    retail_minor: int
    pooled: bool
    # Buyers can buy it: the merchant sells it and the platform has not withdrawn it.
    on_sale: bool
    created_at: datetime


async def upsert_profile(
    conn: Connection, *, merchant_id: UUID, seller_name: str, tax_id: str
) -> None:
    await conn.execute(
        """
        INSERT INTO iot_merchant_profiles (merchant_id, seller_name, tax_id)
        VALUES (%s, %s, %s)
        ON CONFLICT (merchant_id) DO UPDATE
        SET seller_name = EXCLUDED.seller_name, tax_id = EXCLUDED.tax_id, updated_at = now()
        """,
        (merchant_id, seller_name, tax_id),
    )


async def get_profile(conn: Connection, merchant_id: UUID) -> tuple[str, str] | None:
    cur = await conn.execute(
        "SELECT seller_name, tax_id FROM iot_merchant_profiles WHERE merchant_id = %s",
        (merchant_id,),
    )
    row = await cur.fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


async def upsert_merchant_plan(
    conn: Connection,
    *,
    merchant_id: UUID,
    plan_id: UUID,
    retail_minor: int,
    pooled: bool,
    on_sale: bool,
) -> None:
    await conn.execute(
        """
        INSERT INTO iot_merchant_plans (merchant_id, plan_id, retail_minor, pooled, on_sale)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (merchant_id, plan_id) DO UPDATE
        SET retail_minor = EXCLUDED.retail_minor, pooled = EXCLUDED.pooled,
            on_sale = EXCLUDED.on_sale, updated_at = now()
        """,
        (merchant_id, plan_id, retail_minor, pooled, on_sale),
    )


_MERCHANT_PLAN = """
    SELECT p.plan_id, p.name, p.kind, p.data_bytes, p.months, p.currency, p.wholesale_minor,
           m.retail_minor, m.pooled, m.on_sale AND p.active AS on_sale, p.created_at
    FROM iot_merchant_plans m JOIN iot_wholesale_plans p USING (plan_id)
    WHERE m.merchant_id = %(merchant)s
"""


async def merchant_plans(
    conn: Connection,
    merchant_id: UUID,
    *,
    after: tuple[datetime, UUID] | None = None,
    limit: int,
) -> list[MerchantPlanRow]:
    """One page of a merchant's plans, oldest plan first (`limit + 1` rows)."""
    created, plan_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(MerchantPlanRow)) as cur:
        await cur.execute(
            _MERCHANT_PLAN
            + """
              AND (%(created)s::timestamptz IS NULL
                   OR (p.created_at, p.plan_id) > (%(created)s, %(plan)s::uuid))
            ORDER BY p.created_at, p.plan_id LIMIT %(limit)s
            """,
            {
                "merchant": merchant_id,
                "created": created,
                "plan": plan_id,
                "limit": limit + 1,
            },
        )
        return await cur.fetchall()


async def plans_on_sale(conn: Connection, merchant_id: UUID) -> list[MerchantPlanRow]:
    """Every plan a merchant's buyers can buy now, oldest plan first."""
    async with conn.cursor(row_factory=class_row(MerchantPlanRow)) as cur:
        await cur.execute(
            _MERCHANT_PLAN + " AND m.on_sale AND p.active ORDER BY p.created_at, p.plan_id",
            {"merchant": merchant_id},
        )
        return await cur.fetchall()


async def merchant_plan(
    conn: Connection, merchant_id: UUID, plan_id: UUID
) -> MerchantPlanRow | None:
    async with conn.cursor(row_factory=class_row(MerchantPlanRow)) as cur:
        await cur.execute(
            _MERCHANT_PLAN + " AND p.plan_id = %(plan)s", {"merchant": merchant_id, "plan": plan_id}
        )
        return await cur.fetchone()


async def stock_count(conn: Connection, merchant_id: UUID) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM iot_cards WHERE merchant_id = %s AND state = 'inventory'",
        (merchant_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
