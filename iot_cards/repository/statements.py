"""SQL of a merchant's books: invoices of orders and refunds, the month's sales and refunds,
and the people who bought."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from flowbill.db import Connection
from iot_cards.repository import orders
from iot_cards.repository.orders import OrderRow


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    invoice_id: UUID
    order_id: UUID
    merchant_id: UUID
    buyer_id: UUID
    colour: str
    original_invoice_id: UUID | None
    number: str | None
    state: str
    document: dict[str, Any]
    issued_at: datetime | None
    created_at: datetime


_INVOICE = (
    "invoice_id, order_id, merchant_id, buyer_id, colour, original_invoice_id, number, state,"
    " document, issued_at, created_at"
)


@dataclass(frozen=True, slots=True)
class BuyerRow:
    buyer_id: UUID
    cards: int
    orders: int
    name_masked: str | None
    first_order_at: datetime


async def insert_invoice(
    conn: Connection,
    *,
    order: OrderRow,
    colour: str,
    original_invoice_id: UUID | None,
    document: dict[str, object],
) -> None:
    await conn.execute(
        """
        INSERT INTO iot_invoices (order_id, merchant_id, buyer_id, colour, original_invoice_id,
                                  document)
        VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (order_id, colour) DO NOTHING
        """,
        (
            order.order_id,
            order.merchant_id,
            order.buyer_id,
            colour,
            original_invoice_id,
            Jsonb(document),
        ),
    )


async def get_invoice(
    conn: Connection, invoice_id: UUID, *, lock: bool = False
) -> InvoiceRow | None:
    async with conn.cursor(row_factory=class_row(InvoiceRow)) as cur:
        await cur.execute(
            f"SELECT {_INVOICE} FROM iot_invoices WHERE invoice_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (invoice_id,),
        )
        return await cur.fetchone()


async def invoice_of(conn: Connection, order_id: UUID, colour: str) -> InvoiceRow | None:
    async with conn.cursor(row_factory=class_row(InvoiceRow)) as cur:
        await cur.execute(
            f"SELECT {_INVOICE} FROM iot_invoices WHERE order_id = %s AND colour = %s",
            (order_id, colour),
        )
        return await cur.fetchone()


async def list_invoices(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int,
) -> list[InvoiceRow]:
    """One page of a merchant's or a buyer's invoices, newest first (`limit + 1` rows)."""
    column, value = ("merchant_id", merchant_id) if merchant_id else ("buyer_id", buyer_id)
    created, invoice_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(InvoiceRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_INVOICE} FROM iot_invoices WHERE {column} = %(owner)s
              AND (%(created)s::timestamptz IS NULL
                   OR (created_at, invoice_id) < (%(created)s, %(invoice)s::uuid))
            ORDER BY created_at DESC, invoice_id DESC LIMIT %(limit)s
            """,
            {"owner": value, "created": created, "invoice": invoice_id, "limit": limit + 1},
        )
        return await cur.fetchall()


async def issue_invoice(
    conn: Connection,
    invoice_id: UUID,
    *,
    number: str,
    issued_at: datetime,
    document: dict[str, object],
) -> None:
    await conn.execute(
        """
        UPDATE iot_invoices SET state = 'issued', number = %s, issued_at = %s, document = %s
        WHERE invoice_id = %s AND state = 'pending'
        """,
        (number, issued_at, Jsonb(document), invoice_id),
    )


async def paid_between(
    conn: Connection, merchant_id: UUID, *, since: datetime, until: datetime
) -> list[OrderRow]:
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"""
            SELECT {orders.ORDER_COLUMNS} FROM iot_orders
            WHERE merchant_id = %s AND paid_at >= %s AND paid_at < %s
            ORDER BY paid_at, order_id
            """,
            (merchant_id, since, until),
        )
        return await cur.fetchall()


async def refunded_between(
    conn: Connection, merchant_id: UUID, *, since: datetime, until: datetime
) -> list[tuple[OrderRow, datetime]]:
    cur = await conn.execute(
        """
        SELECT r.order_id, r.settled_at FROM iot_refunds r JOIN iot_orders o USING (order_id)
        WHERE o.merchant_id = %s AND r.state = 'refunded' AND r.settled_at >= %s
          AND r.settled_at < %s
        ORDER BY r.settled_at, r.order_id
        """,
        (merchant_id, since, until),
    )
    found = []
    for order_id, settled_at in await cur.fetchall():
        order = await orders.get_order(conn, order_id)
        assert order is not None
        found.append((order, settled_at))
    return found


async def buyers_of(
    conn: Connection,
    merchant_id: UUID,
    *,
    buyer_id: UUID | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int,
) -> list[BuyerRow]:
    """One page of the merchant's buyers (or the one asked for), by first order
    (`limit + 1` rows)."""
    first, after_buyer = after or (None, None)
    async with conn.cursor(row_factory=class_row(BuyerRow)) as cur:
        await cur.execute(
            """
            SELECT o.buyer_id,
                   (SELECT count(*) FROM iot_cards c WHERE c.merchant_id = o.merchant_id
                      AND c.holder_id = o.buyer_id) AS cards,
                   count(*) AS orders,
                   (SELECT v.name_masked FROM iot_verifications v
                    WHERE v.merchant_id = o.merchant_id AND v.holder_id = o.buyer_id
                    ORDER BY v.submitted_at DESC LIMIT 1) AS name_masked,
                   min(o.created_at) AS first_order_at
            FROM iot_orders o
            WHERE o.merchant_id = %(merchant)s
              AND (%(buyer)s::uuid IS NULL OR o.buyer_id = %(buyer)s)
            GROUP BY o.merchant_id, o.buyer_id
            HAVING %(first)s::timestamptz IS NULL
                OR (min(o.created_at), o.buyer_id) > (%(first)s, %(after)s::uuid)
            ORDER BY min(o.created_at), o.buyer_id
            LIMIT %(limit)s
            """,
            {
                "merchant": merchant_id,
                "buyer": buyer_id,
                "first": first,
                "after": after_buyer,
                "limit": limit + 1,
            },
        )
        return await cur.fetchall()
