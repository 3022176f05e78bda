"""SQL of the exchange (wallet.exchange): catalogue, orders, their events, returns."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class ItemRow:
    item_id: UUID
    kind: str
    name: str
    sku: str
    price_bytes: int
    carrier_prices: dict[str, int]
    price_minor: int
    currency: str
    merchant_id: UUID | None
    stock: int | None
    per_user_limit: int | None
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ExchangeOrderRow:
    order_id: UUID
    user_id: str
    idempotency_key: str
    item_id: UUID
    quantity: int
    carrier_id: str | None
    unit_bytes: int
    unit_minor: int
    currency: str
    state: str
    payment_state: str
    fulfilment_state: str
    reason: str | None
    voucher: str | None
    spend_txn_id: int | None
    payment_txn_id: int | None
    returned_quantity: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReturnRow:
    return_id: UUID
    order_id: UUID
    idempotency_key: str
    quantity: int
    data_txn_id: int
    money_minor: int
    money_state: str
    money_txn_id: int | None
    created_at: datetime


async def insert_item(conn: Connection, **values: object) -> ItemRow:
    columns = list(values)
    params = [Jsonb(v) if k == "carrier_prices" else v for k, v in values.items()]
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute(
            f"INSERT INTO catalogue_items ({', '.join(columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))}) RETURNING *",
            params,
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def update_item(
    conn: Connection, item_id: UUID, *, stock: int | None, set_stock: bool, active: bool | None
) -> ItemRow | None:
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute(
            """
            UPDATE catalogue_items SET
                stock = CASE WHEN %s THEN %s ELSE stock END,
                active = coalesce(%s, active), updated_at = now()
            WHERE item_id = %s RETURNING *
            """,
            (set_stock, stock, active, item_id),
        )
        return await cur.fetchone()


async def get_item(conn: Connection, item_id: UUID) -> ItemRow | None:
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute("SELECT * FROM catalogue_items WHERE item_id = %s", (item_id,))
        return await cur.fetchone()


async def list_items(
    conn: Connection, *, active_only: bool, after: tuple[str, str, UUID] | None, limit: int
) -> list[ItemRow]:
    """Catalogue items by (kind, name, item id), after that key."""
    kind, name, item_id = after or (None, None, None)
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM catalogue_items
            WHERE (active OR NOT %(active_only)s)
              AND (%(kind)s::text IS NULL
                   OR (kind, name, item_id) > (%(kind)s::text, %(name)s::text, %(item)s::uuid))
            ORDER BY kind, name, item_id LIMIT %(limit)s
            """,
            {"active_only": active_only, "kind": kind, "name": name, "item": item_id,
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()


async def restock(conn: Connection, item_id: UUID, quantity: int) -> None:
    await conn.execute(
        "UPDATE catalogue_items SET stock = stock + %s WHERE item_id = %s AND stock IS NOT NULL",
        (quantity, item_id),
    )


@dataclass(frozen=True, slots=True)
class EventRow:
    state: str
    detail: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Placement:
    """What `wallet_place_order` (migrations/0012) did: its outcome, what a refusal needs to
    explain itself, and the order with its events (placed, or the first of a repeat)."""

    outcome: str
    held_units: int | None
    item_name: str | None
    item_kind: str | None
    item_limit: int | None
    item_carriers: list[str] | None
    order: ExchangeOrderRow | None
    events: list[EventRow]


_ORDER_FIELDS = [f.name for f in fields(ExchangeOrderRow)]
_PLACE_ORDER = (
    "SELECT r.outcome, r.held_units, r.item_name, r.item_kind, r.item_limit, r.item_carriers,"
    " r.event_states, r.event_details, r.event_ats, "
    + ", ".join(f"(r.placed).{name}" for name in _ORDER_FIELDS)
    + " FROM wallet_place_order(%s, %s, %s, %s, %s, %s) r"
)


async def place_exchange_order(
    conn: Connection, *, user_id: str, key: str, item_id: UUID, quantity: int,
    carrier_id: str | None, now: datetime,
) -> Placement:  # fmt: skip
    """Place an order in one round trip: item, order, limit, stock, spend and events."""
    cur = await conn.execute(_PLACE_ORDER, (user_id, key, item_id, quantity, carrier_id, now))
    row = await cur.fetchone()
    assert row is not None
    outcome, held, name, kind, limit, carriers, states, details, ats = row[:9]
    order = None if row[9] is None else ExchangeOrderRow(*row[9:])
    return Placement(
        outcome=outcome, held_units=held, item_name=name, item_kind=kind, item_limit=limit,
        item_carriers=carriers, order=order,
        events=[EventRow(*event) for event in zip(states or [], details or [], ats or [],
                                                  strict=True)],
    )  # fmt: skip


async def get_exchange_order(
    conn: Connection, order_id: UUID, *, lock: bool = False
) -> ExchangeOrderRow | None:
    async with conn.cursor(row_factory=class_row(ExchangeOrderRow)) as cur:
        await cur.execute(
            "SELECT * FROM exchange_orders WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
            (order_id,),
        )
        return await cur.fetchone()


async def exchange_orders_of(
    conn: Connection, *, user_id: str | None = None, merchant_id: UUID | None = None,
    after: tuple[datetime, UUID] | None, limit: int,
) -> list[ExchangeOrderRow]:  # fmt: skip
    """A user's orders, or those of a merchant's goods, newest first, after that key."""
    created_at, order_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(ExchangeOrderRow)) as cur:
        await cur.execute(
            """
            SELECT o.* FROM exchange_orders o JOIN catalogue_items i USING (item_id)
            WHERE (%(u)s::text IS NULL OR o.user_id = %(u)s)
              AND (%(m)s::uuid IS NULL OR i.merchant_id = %(m)s)
              AND (%(ac)s::timestamptz IS NULL
                   OR (o.created_at, o.order_id) < (%(ac)s::timestamptz, %(ao)s::uuid))
            ORDER BY o.created_at DESC, o.order_id DESC LIMIT %(limit)s
            """,
            {"u": user_id, "m": merchant_id, "ac": created_at, "ao": order_id, "limit": limit},
        )
        return await cur.fetchall()


async def update_exchange_order(conn: Connection, order_id: UUID, **changes: object) -> None:
    allowed = {"state", "payment_state", "fulfilment_state", "reason", "voucher", "spend_txn_id",
               "payment_txn_id", "returned_quantity"}  # fmt: skip
    assert set(changes) <= allowed, set(changes) - allowed
    sets = ", ".join(f"{column} = %s" for column in changes)
    await conn.execute(
        f"UPDATE exchange_orders SET {sets}, updated_at = now() WHERE order_id = %s",
        [*changes.values(), order_id],
    )


async def add_order_event(conn: Connection, order_id: UUID, state: str, detail: str | None) -> None:
    await conn.execute(
        "INSERT INTO exchange_order_events (order_id, state, detail) VALUES (%s, %s, %s)",
        (order_id, state, detail),
    )


async def order_events(conn: Connection, order_id: UUID) -> list[EventRow]:
    async with conn.cursor(row_factory=class_row(EventRow)) as cur:
        await cur.execute(
            "SELECT state, detail, at FROM exchange_order_events WHERE order_id = %s"
            " ORDER BY event_id",
            (order_id,),
        )
        return await cur.fetchall()


async def insert_return(
    conn: Connection, *, order_id: UUID, key: str, quantity: int, data_txn_id: int,
    money_minor: int,
) -> ReturnRow:  # fmt: skip
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute(
            """
            INSERT INTO exchange_returns (order_id, idempotency_key, quantity, data_txn_id,
                                          money_minor, money_state)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING *
            """,
            (order_id, key, quantity, data_txn_id, money_minor,
             "pending" if money_minor else "none"),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        return row


async def find_return(conn: Connection, key: str) -> ReturnRow | None:
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute("SELECT * FROM exchange_returns WHERE idempotency_key = %s", (key,))
        return await cur.fetchone()


async def get_return(conn: Connection, return_id: UUID, *, lock: bool = False) -> ReturnRow | None:
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute(
            "SELECT * FROM exchange_returns WHERE return_id = %s" + (" FOR UPDATE" if lock else ""),
            (return_id,),
        )
        return await cur.fetchone()


async def returns_of(conn: Connection, order_id: UUID) -> list[ReturnRow]:
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute(
            "SELECT * FROM exchange_returns WHERE order_id = %s ORDER BY created_at", (order_id,)
        )
        return await cur.fetchall()


async def settle_return_money(conn: Connection, return_id: UUID, txn_id: int) -> None:
    await conn.execute(
        "UPDATE exchange_returns SET money_state = 'refunded', money_txn_id = %s"
        " WHERE return_id = %s",
        (txn_id, return_id),
    )


async def open_exchange_work(
    conn: Connection, *, older_than: datetime, limit: int
) -> tuple[list[UUID], list[UUID]]:
    """Orders waiting on a party, and returns whose money is not yet refunded."""
    cur = await conn.execute(
        """
        SELECT order_id FROM exchange_orders
        WHERE state IN ('placed', 'paid') AND updated_at < %s
          AND (payment_state = 'pending' OR fulfilment_state IN ('waiting', 'pending'))
        ORDER BY updated_at LIMIT %s
        """,
        (older_than, limit),
    )
    orders = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute(
        "SELECT return_id FROM exchange_returns WHERE money_state = 'pending' AND created_at < %s"
        " ORDER BY created_at LIMIT %s",
        (older_than, limit),
    )
    return orders, [row[0] for row in await cur.fetchall()]
