"""SQL of orders (purchases and recharges) and their refunds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class OrderRow:
    order_id: UUID
    idempotency_key: str
    kind: str
    merchant_id: UUID
    buyer_id: UUID
    iccid: str
    plan_id: UUID
    plan_kind: str
    plan_name: str
    data_bytes: int
    months: int
    retail_minor: int
    wholesale_minor: int
    currency: str
    invoice_title: str
    invoice_tax_id: str | None
    state: str
    reason: str | None
    payment_ref: str | None
    merchant_txn_id: int | None
    platform_txn_id: int | None
    created_at: datetime
    paid_at: datetime | None


ORDER_COLUMNS = (
    "order_id, idempotency_key, kind, merchant_id, buyer_id, iccid, plan_id, plan_kind,"
    " plan_name, data_bytes, months, retail_minor, wholesale_minor, currency, invoice_title,"
    " invoice_tax_id, state, reason, payment_ref, merchant_txn_id, platform_txn_id, created_at,"
    " paid_at"
)


@dataclass(frozen=True, slots=True)
class RefundRow:
    refund_id: UUID
    order_id: UUID
    idempotency_key: str
    amount_minor: int
    reason: str
    state: str
    failure: str | None
    created_at: datetime
    settled_at: datetime | None


_REFUND = (
    "refund_id, order_id, idempotency_key, amount_minor, reason, state, failure, created_at,"
    " settled_at"
)


async def take_card_from_stock(conn: Connection, merchant_id: UUID) -> str | None:
    """Lock one card of the merchant's stock; concurrent buyers skip each other's card."""
    cur = await conn.execute(
        """
        SELECT iccid FROM iot_cards WHERE merchant_id = %s AND state = 'inventory'
        ORDER BY iccid LIMIT 1 FOR UPDATE SKIP LOCKED
        """,
        (merchant_id,),
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def insert_order(conn: Connection, **values: object) -> tuple[OrderRow, bool]:
    """The order for its idempotency key: (order, created now)."""
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"INSERT INTO iot_orders ({columns}) VALUES ({marks})"
            f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {ORDER_COLUMNS}",
            list(values.values()),
        )
        row = await cur.fetchone()
        if row is not None:
            return row, True
        await cur.execute(
            f"SELECT {ORDER_COLUMNS} FROM iot_orders WHERE idempotency_key = %s",
            (values["idempotency_key"],),
        )
        found = await cur.fetchone()
    assert found is not None
    return found, False


async def order_by_key(conn: Connection, key: str) -> OrderRow | None:
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"SELECT {ORDER_COLUMNS} FROM iot_orders WHERE idempotency_key = %s", (key,)
        )
        return await cur.fetchone()


async def get_order(conn: Connection, order_id: UUID, *, lock: bool = False) -> OrderRow | None:
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"SELECT {ORDER_COLUMNS} FROM iot_orders WHERE order_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (order_id,),
        )
        return await cur.fetchone()


async def list_orders(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int,
) -> list[OrderRow]:
    """One page of orders, newest first (`limit + 1` rows)."""
    created, order_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"""
            SELECT {ORDER_COLUMNS} FROM iot_orders
            WHERE (%(merchant)s::uuid IS NULL OR merchant_id = %(merchant)s)
              AND (%(buyer)s::uuid IS NULL OR buyer_id = %(buyer)s)
              AND (%(created)s::timestamptz IS NULL
                   OR (created_at, order_id) < (%(created)s, %(order)s::uuid))
            ORDER BY created_at DESC, order_id DESC LIMIT %(limit)s
            """,
            {
                "merchant": merchant_id,
                "buyer": buyer_id,
                "created": created,
                "order": order_id,
                "limit": limit + 1,
            },
        )
        return await cur.fetchall()


async def paid_purchase_exists(conn: Connection, *, iccid: str, buyer_id: UUID) -> bool:
    cur = await conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM iot_orders WHERE iccid = %s AND buyer_id = %s
                       AND kind = 'purchase' AND state = 'paid')
        """,
        (iccid, buyer_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0])


async def update_order(conn: Connection, order_id: UUID, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_orders SET {columns} WHERE order_id = %s", [*changes.values(), order_id]
    )


async def insert_refund(
    conn: Connection, *, order_id: UUID, key: str, amount_minor: int, reason: str
) -> RefundRow:
    async with conn.cursor(row_factory=class_row(RefundRow)) as cur:
        await cur.execute(
            f"""
            INSERT INTO iot_refunds (order_id, idempotency_key, amount_minor, reason)
            VALUES (%s, %s, %s, %s) RETURNING {_REFUND}
            """,
            (order_id, key, amount_minor, reason),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_refund(
    conn: Connection,
    *,
    refund_id: UUID | None = None,
    order_id: UUID | None = None,
    key: str | None = None,
    lock: bool = False,
) -> RefundRow | None:
    column, value = next(
        (c, v)
        for c, v in (("refund_id", refund_id), ("order_id", order_id), ("idempotency_key", key))
        if v is not None
    )
    async with conn.cursor(row_factory=class_row(RefundRow)) as cur:
        await cur.execute(
            f"SELECT {_REFUND} FROM iot_refunds WHERE {column} = %s"
            + (" FOR UPDATE" if lock else ""),
            (value,),
        )
        return await cur.fetchone()


async def update_refund(conn: Connection, refund_id: UUID, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_refunds SET {columns} WHERE refund_id = %s", [*changes.values(), refund_id]
    )
