"""SQL of carriers and their orders (wallet.withdrawals): top-ups and transfers-in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class CarrierRow:
    carrier_id: str
    name: str
    package_mb: list[int]
    min_package_mb: int
    transfer_in: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CarrierOrderRow:
    order_id: UUID
    direction: str
    user_id: str
    idempotency_key: str
    carrier_id: str
    msisdn_masked: str
    data_mb: int
    state: str
    reason: str | None
    carrier_ref: str | None
    reserve_txn_id: int | None
    settle_txn_id: int | None
    lot_id: int | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None
    consent_tries: int
    consent_expires_at: datetime | None
    consented_at: datetime | None
    credited_mb: int | None


async def upsert_carrier(
    conn: Connection, *, carrier_id: str, name: str, package_mb: list[int], min_package_mb: int,
    transfer_in: bool,
) -> CarrierRow:  # fmt: skip
    async with conn.cursor(row_factory=class_row(CarrierRow)) as cur:
        await cur.execute(
            """
            INSERT INTO carriers (carrier_id, name, package_mb, min_package_mb, transfer_in)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (carrier_id) DO UPDATE SET name = excluded.name,
                package_mb = excluded.package_mb, min_package_mb = excluded.min_package_mb,
                transfer_in = excluded.transfer_in, updated_at = now()
            RETURNING *
            """,
            (carrier_id, name, package_mb, min_package_mb, transfer_in),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_carrier(conn: Connection, carrier_id: str) -> CarrierRow | None:
    async with conn.cursor(row_factory=class_row(CarrierRow)) as cur:
        await cur.execute("SELECT * FROM carriers WHERE carrier_id = %s", (carrier_id,))
        return await cur.fetchone()


async def list_carriers(conn: Connection, *, after: str | None, limit: int) -> list[CarrierRow]:
    """Carriers by id, after that id."""
    async with conn.cursor(row_factory=class_row(CarrierRow)) as cur:
        await cur.execute(
            "SELECT * FROM carriers WHERE %s::text IS NULL OR carrier_id > %s::text"
            " ORDER BY carrier_id LIMIT %s",
            (after, after, limit),
        )
        return await cur.fetchall()


async def insert_carrier_order(
    conn: Connection, *, direction: str, user_id: str, key: str, carrier_id: str,
    msisdn_masked: str, data_mb: int, state: str, consent_expires_at: datetime | None = None,
) -> tuple[CarrierOrderRow, bool]:  # fmt: skip
    """The order for (user, key): (order, created now). A concurrent twin waits here."""
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            """
            INSERT INTO carrier_orders (direction, user_id, idempotency_key, carrier_id,
                                        msisdn_masked, data_mb, state, consent_expires_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING *
            """,
            (direction, user_id, key, carrier_id, msisdn_masked, data_mb, state,
             consent_expires_at),
        )  # fmt: skip
        row = await cur.fetchone()
        if row is not None:
            return row, True
        await cur.execute(
            "SELECT * FROM carrier_orders WHERE user_id = %s AND idempotency_key = %s",
            (user_id, key),
        )
        found = await cur.fetchone()
        assert found is not None
        return found, False


async def get_carrier_order(
    conn: Connection, order_id: UUID, *, lock: bool = False
) -> CarrierOrderRow | None:
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            "SELECT * FROM carrier_orders WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
            (order_id,),
        )
        return await cur.fetchone()


async def carrier_orders_of(
    conn: Connection, user_id: str, *, after: tuple[datetime, UUID] | None, limit: int
) -> list[CarrierOrderRow]:
    """A user's carrier orders, newest first, after that key."""
    created_at, order_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM carrier_orders
            WHERE user_id = %(u)s
              AND (%(ac)s::timestamptz IS NULL
                   OR (created_at, order_id) < (%(ac)s::timestamptz, %(ao)s::uuid))
            ORDER BY created_at DESC, order_id DESC LIMIT %(limit)s
            """,
            {"u": user_id, "ac": created_at, "ao": order_id, "limit": limit},
        )
        return await cur.fetchall()


async def update_carrier_order(
    conn: Connection, order_id: UUID, *, state: str, reason: str | None = None,
    carrier_ref: str | None = None, reserve_txn_id: int | None = None,
    settle_txn_id: int | None = None, lot_id: int | None = None, attempt: bool = False,
    settled: bool = False, credited_mb: int | None = None,
) -> None:  # fmt: skip
    await conn.execute(
        """
        UPDATE carrier_orders SET state = %s, reason = coalesce(%s, reason),
            carrier_ref = coalesce(%s, carrier_ref),
            reserve_txn_id = coalesce(%s, reserve_txn_id),
            settle_txn_id = coalesce(%s, settle_txn_id), lot_id = coalesce(%s, lot_id),
            credited_mb = coalesce(%s, credited_mb),
            attempts = attempts + %s, updated_at = now(),
            settled_at = CASE WHEN %s THEN now() ELSE settled_at END
        WHERE order_id = %s
        """,
        (state, reason, carrier_ref, reserve_txn_id, settle_txn_id, lot_id, credited_mb,
         int(attempt), settled, order_id),
    )  # fmt: skip


async def take_consent_try(conn: Connection, order_id: UUID) -> None:
    """Count one try at the consent code, before the carrier is asked about it."""
    await conn.execute(
        "UPDATE carrier_orders SET consent_tries = consent_tries + 1, updated_at = now()"
        " WHERE order_id = %s",
        (order_id,),
    )


async def record_consent(conn: Connection, order_id: UUID) -> None:
    """The line's subscriber consented: the order may go to the carrier."""
    await conn.execute(
        "UPDATE carrier_orders SET state = 'reserved', consented_at = now(), updated_at = now()"
        " WHERE order_id = %s AND state = 'awaiting_consent'",
        (order_id,),
    )


async def expire_consents(conn: Connection, *, now: datetime, limit: int) -> int:
    """Fail orders whose consent code can no longer be confirmed; how many."""
    cur = await conn.execute(
        """
        UPDATE carrier_orders SET state = 'failed', reason = 'consent_expired',
            updated_at = now(), settled_at = now()
        WHERE order_id IN (
            SELECT order_id FROM carrier_orders
            WHERE state = 'awaiting_consent' AND consent_expires_at <= %s
            ORDER BY consent_expires_at LIMIT %s FOR UPDATE SKIP LOCKED)
        """,
        (now, limit),
    )
    return cur.rowcount


async def open_carrier_orders(
    conn: Connection, *, older_than: datetime, limit: int
) -> list[CarrierOrderRow]:
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM carrier_orders
            WHERE state IN ('reserved', 'submitted') AND updated_at < %s
            ORDER BY updated_at LIMIT %s
            """,
            (older_than, limit),
        )
        return await cur.fetchall()
