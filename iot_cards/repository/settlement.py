"""SQL of settling with the outside parties: the work left open with them."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flowbill.db import Connection


async def open_work(
    conn: Connection, *, older_than: datetime, limit: int
) -> tuple[list[UUID], list[UUID], list[UUID], list[UUID]]:
    """Orders awaiting payment, refunds, invoices and verifications open since before
    `older_than`."""
    found: list[list[UUID]] = []
    for sql in (
        "SELECT order_id FROM iot_orders WHERE state = 'placed' AND created_at < %s",
        "SELECT refund_id FROM iot_refunds WHERE state = 'pending' AND created_at < %s",
        "SELECT invoice_id FROM iot_invoices WHERE state = 'pending' AND created_at < %s",
        "SELECT verification_id FROM iot_verifications WHERE state = 'pending'"
        " AND submitted_at < %s",
    ):
        cur = await conn.execute(sql + " ORDER BY 1 LIMIT %s", (older_than, limit))
        found.append([row[0] for row in await cur.fetchall()])
    return found[0], found[1], found[2], found[3]
