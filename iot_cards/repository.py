"""SQL of the IoT card domain (migrations/0011.iot_cards.sql). Typed rows, no commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class CardRow:
    iccid: str
    imsi: str
    msisdn: str
    batch_id: UUID
    merchant_id: UUID | None
    state: str
    block_reasons: list[str]
    suspended_by: str | None
    holder_id: UUID | None
    plan_id: UUID | None
    imei: str | None
    last_imei: str | None
    verification_id: UUID | None
    activated_at: datetime | None
    state_changed_at: datetime
    created_at: datetime


_CARD = (
    "iccid, imsi, msisdn, batch_id, merchant_id, state, block_reasons, suspended_by, holder_id,"
    " plan_id, imei, last_imei, verification_id, activated_at, state_changed_at, created_at"
)


@dataclass(frozen=True, slots=True)
class PlanRow:
    plan_id: UUID
    name: str
    kind: str
    data_bytes: int
    months: int
    wholesale_minor: int
    currency: str
    active: bool
    created_at: datetime


_PLAN = "plan_id, name, kind, data_bytes, months, wholesale_minor, currency, active, created_at"


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
    on_sale: bool
    active: bool


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


_ORDER = (
    "order_id, idempotency_key, kind, merchant_id, buyer_id, iccid, plan_id, plan_kind,"
    " plan_name, data_bytes, months, retail_minor, wholesale_minor, currency, invoice_title,"
    " invoice_tax_id, state, reason, payment_ref, merchant_txn_id, platform_txn_id, created_at,"
    " paid_at"
)


@dataclass(frozen=True, slots=True)
class VerificationRow:
    verification_id: UUID
    iccid: str
    holder_id: UUID
    merchant_id: UUID
    id_hash: bytes
    id_masked: str
    name_masked: str
    phone_masked: str
    state: str
    reason: str | None
    holds_slot: bool
    submitted_at: datetime
    settled_at: datetime | None


_VERIFICATION = (
    "verification_id, iccid, holder_id, merchant_id, id_hash, id_masked, name_masked,"
    " phone_masked, state, reason, holds_slot, submitted_at, settled_at"
)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    history_id: int
    iccid: str
    command: str
    from_state: str | None
    to_state: str | None
    actor: str
    reason: str
    command_key: str | None
    effective_at: datetime
    applied_at: datetime | None
    status: str


_HISTORY = (
    "history_id, iccid, command, from_state, to_state, actor, reason, command_key, effective_at,"
    " applied_at, status"
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
class ThresholdRow:
    threshold_id: UUID
    merchant_id: UUID
    percent: int | None
    bytes: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert_id: int
    merchant_id: UUID
    subject: str
    iccids: list[str]
    threshold_id: UUID
    percent: int | None
    bytes: int | None
    period: date
    used_bytes: int
    quota_bytes: int
    crossed_at: datetime


@dataclass(frozen=True, slots=True)
class LiveCard:
    """A card whose usage is watched, with what it takes to judge its quota."""

    iccid: str
    merchant_id: UUID
    plan_id: UUID | None
    pooled: bool
    state: str
    block_reasons: list[str]


# --- merchants ---------------------------------------------------------------------------


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


# --- inventory ---------------------------------------------------------------------------


async def existing_identifiers(
    conn: Connection, *, iccids: list[str], imsis: list[str], msisdns: list[str]
) -> list[tuple[str, str, str]]:
    cur = await conn.execute(
        """
        SELECT iccid, imsi, msisdn FROM iot_cards
        WHERE iccid = ANY(%s) OR imsi = ANY(%s) OR msisdn = ANY(%s)
        """,
        (iccids, imsis, msisdns),
    )
    return [(str(a), str(b), str(c)) for a, b, c in await cur.fetchall()]


async def insert_batch(
    conn: Connection,
    *,
    carrier: str,
    label: str,
    imported_by: UUID,
    rows: Sequence[tuple[str, str, str]],
) -> UUID:
    cur = await conn.execute(
        """
        INSERT INTO iot_import_batches (carrier, label, cards, imported_by)
        VALUES (%s, %s, %s, %s) RETURNING batch_id
        """,
        (carrier, label, len(rows), imported_by),
    )
    found = await cur.fetchone()
    assert found is not None
    batch_id: UUID = found[0]
    await conn.execute(
        """
        INSERT INTO iot_cards (iccid, imsi, msisdn, batch_id)
        SELECT i, s, m, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(i, s, m)
        """,
        (batch_id, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
    )
    return batch_id


async def assign_block(
    conn: Connection, *, merchant_id: UUID, first: str, last: str
) -> tuple[int, int]:
    """Give the unassigned inventory cards in [first, last] to a merchant; returns
    (cards assigned, cards in the range that were not free)."""
    cur = await conn.execute(
        """
        WITH block AS (
            SELECT iccid, merchant_id IS NULL AND state = 'inventory' AS free
            FROM iot_cards
            WHERE length(iccid) = length(%(first)s) AND iccid BETWEEN %(first)s AND %(last)s
            FOR UPDATE
        ), taken AS (
            UPDATE iot_cards c SET merchant_id = %(merchant)s
            FROM block b WHERE c.iccid = b.iccid AND b.free AND
                NOT EXISTS (SELECT 1 FROM block WHERE NOT free)
            RETURNING c.iccid
        )
        SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM block WHERE NOT free)
        """,
        {"first": first, "last": last, "merchant": merchant_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def get_card(
    conn: Connection,
    iccid: str,
    *,
    lock: bool = False,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
) -> CardRow | None:
    conditions = ["iccid = %s"]
    params: list[object] = [iccid]
    if merchant_id is not None:
        conditions.append("merchant_id = %s")
        params.append(merchant_id)
    if holder_id is not None:
        conditions.append("holder_id = %s")
        params.append(holder_id)
    sql = f"SELECT {_CARD} FROM iot_cards WHERE {' AND '.join(conditions)}"
    async with conn.cursor(row_factory=class_row(CardRow)) as cur:
        await cur.execute(sql + (" FOR UPDATE" if lock else ""), params)
        return await cur.fetchone()


def _equal_to(**columns: object) -> tuple[list[str], list[object]]:
    """SQL conditions and their parameters for the filters given (None: no filter); the
    column names are ours, never a caller's."""
    given = [(column, value) for column, value in columns.items() if value is not None]
    return ["true"] + [f"{column} = %s" for column, _ in given], [value for _, value in given]


async def list_cards(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
    state: str | None = None,
    after: str | None = None,
    limit: int,
) -> list[CardRow]:
    conditions, params = _equal_to(merchant_id=merchant_id, holder_id=holder_id, state=state)
    if after is not None:
        conditions.append("iccid > %s")
        params.append(after)
    params.append(limit)
    async with conn.cursor(row_factory=class_row(CardRow)) as cur:
        await cur.execute(
            f"SELECT {_CARD} FROM iot_cards WHERE {' AND '.join(conditions)}"
            " ORDER BY iccid LIMIT %s",
            params,
        )
        return await cur.fetchall()


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


async def stock_count(conn: Connection, merchant_id: UUID) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM iot_cards WHERE merchant_id = %s AND state = 'inventory'",
        (merchant_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def update_card(conn: Connection, iccid: str, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_cards SET {columns} WHERE iccid = %s", [*changes.values(), iccid]
    )


async def insert_history(
    conn: Connection,
    *,
    iccid: str,
    command: str,
    from_state: str | None,
    to_state: str | None,
    actor: str,
    reason: str,
    command_key: str | None,
    effective_at: datetime,
    applied_at: datetime | None,
    status: str,
) -> int:
    cur = await conn.execute(
        """
        INSERT INTO iot_card_history (iccid, command, from_state, to_state, actor, reason,
                                      command_key, effective_at, applied_at, status)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING history_id
        """,
        (
            iccid,
            command,
            from_state,
            to_state,
            actor,
            reason,
            command_key,
            effective_at,
            applied_at,
            status,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def history_by_key(conn: Connection, command_key: str) -> HistoryRow | None:
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            f"SELECT {_HISTORY} FROM iot_card_history WHERE command_key = %s", (command_key,)
        )
        return await cur.fetchone()


async def history_of(conn: Connection, iccid: str) -> list[HistoryRow]:
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            f"SELECT {_HISTORY} FROM iot_card_history WHERE iccid = %s ORDER BY history_id",
            (iccid,),
        )
        return await cur.fetchall()


async def last_effective(conn: Connection, iccid: str) -> datetime | None:
    cur = await conn.execute(
        "SELECT max(effective_at) FROM iot_card_history WHERE iccid = %s AND status = 'applied'",
        (iccid,),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def due_scheduled(conn: Connection, *, now: datetime, limit: int) -> list[HistoryRow]:
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_HISTORY} FROM iot_card_history
            WHERE status = 'scheduled' AND effective_at <= %s
            ORDER BY effective_at, history_id LIMIT %s FOR UPDATE SKIP LOCKED
            """,
            (now, limit),
        )
        return await cur.fetchall()


async def settle_scheduled(
    conn: Connection,
    history_id: int,
    *,
    status: str,
    from_state: str | None,
    to_state: str | None,
    applied_at: datetime | None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE iot_card_history SET status = %s, from_state = %s, to_state = %s,
            applied_at = %s, reason = coalesce(%s, reason)
        WHERE history_id = %s
        """,
        (status, from_state, to_state, applied_at, reason, history_id),
    )


# --- plans -------------------------------------------------------------------------------


async def insert_plan(conn: Connection, **values: object) -> PlanRow:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    async with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        await cur.execute(
            f"INSERT INTO iot_wholesale_plans ({columns}) VALUES ({marks}) RETURNING {_PLAN}",
            list(values.values()),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_plan(conn: Connection, plan_id: UUID, *, lock: bool = False) -> PlanRow | None:
    async with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        await cur.execute(
            f"SELECT {_PLAN} FROM iot_wholesale_plans WHERE plan_id = %s"
            + (" FOR SHARE" if lock else ""),
            (plan_id,),
        )
        return await cur.fetchone()


async def list_plans(conn: Connection) -> list[PlanRow]:
    async with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        await cur.execute(f"SELECT {_PLAN} FROM iot_wholesale_plans ORDER BY created_at, plan_id")
        return await cur.fetchall()


async def set_plan_active(conn: Connection, plan_id: UUID, active: bool) -> PlanRow | None:
    async with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        await cur.execute(
            f"UPDATE iot_wholesale_plans SET active = %s WHERE plan_id = %s RETURNING {_PLAN}",
            (active, plan_id),
        )
        return await cur.fetchone()


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
           m.retail_minor, m.pooled, m.on_sale, p.active
    FROM iot_merchant_plans m JOIN iot_wholesale_plans p USING (plan_id)
    WHERE m.merchant_id = %s
"""


async def merchant_plans(conn: Connection, merchant_id: UUID) -> list[MerchantPlanRow]:
    async with conn.cursor(row_factory=class_row(MerchantPlanRow)) as cur:
        await cur.execute(_MERCHANT_PLAN + " ORDER BY p.created_at, p.plan_id", (merchant_id,))
        return await cur.fetchall()


async def merchant_plan(
    conn: Connection, merchant_id: UUID, plan_id: UUID
) -> MerchantPlanRow | None:
    async with conn.cursor(row_factory=class_row(MerchantPlanRow)) as cur:
        await cur.execute(_MERCHANT_PLAN + " AND p.plan_id = %s", (merchant_id, plan_id))
        return await cur.fetchone()


# --- orders ------------------------------------------------------------------------------


async def insert_order(conn: Connection, **values: object) -> tuple[OrderRow, bool]:
    """The order for its idempotency key: (order, created now)."""
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"INSERT INTO iot_orders ({columns}) VALUES ({marks})"
            f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_ORDER}",
            list(values.values()),
        )
        row = await cur.fetchone()
        if row is not None:
            return row, True
        await cur.execute(
            f"SELECT {_ORDER} FROM iot_orders WHERE idempotency_key = %s",
            (values["idempotency_key"],),
        )
        found = await cur.fetchone()
    assert found is not None
    return found, False


async def order_by_key(conn: Connection, key: str) -> OrderRow | None:
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(f"SELECT {_ORDER} FROM iot_orders WHERE idempotency_key = %s", (key,))
        return await cur.fetchone()


async def get_order(conn: Connection, order_id: UUID, *, lock: bool = False) -> OrderRow | None:
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"SELECT {_ORDER} FROM iot_orders WHERE order_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (order_id,),
        )
        return await cur.fetchone()


async def list_orders(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    iccid: str | None = None,
    limit: int,
) -> list[OrderRow]:
    conditions, params = _equal_to(merchant_id=merchant_id, buyer_id=buyer_id, iccid=iccid)
    params.append(limit)
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"SELECT {_ORDER} FROM iot_orders WHERE {' AND '.join(conditions)}"
            " ORDER BY created_at DESC, order_id LIMIT %s",
            params,
        )
        return await cur.fetchall()


async def update_order(conn: Connection, order_id: UUID, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_orders SET {columns} WHERE order_id = %s", [*changes.values(), order_id]
    )


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


async def insert_grant(
    conn: Connection,
    *,
    order_id: UUID,
    iccid: str,
    data_bytes: int,
    starts_at: datetime,
    ends_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO iot_card_grants (order_id, iccid, data_bytes, starts_at, ends_at)
        VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING
        """,
        (order_id, iccid, data_bytes, starts_at, ends_at),
    )


async def cancel_grant(conn: Connection, order_id: UUID) -> None:
    await conn.execute(
        "UPDATE iot_card_grants SET cancelled = true WHERE order_id = %s", (order_id,)
    )


async def latest_term_end(conn: Connection, iccid: str, *, monthly: bool) -> datetime | None:
    """The end of the card's last monthly term (top-ups are one month long, by design)."""
    cur = await conn.execute(
        """
        SELECT max(g.ends_at) FROM iot_card_grants g JOIN iot_orders o USING (order_id)
        WHERE g.iccid = %s AND NOT g.cancelled AND (o.plan_kind = 'monthly') = %s
        """,
        (iccid, monthly),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def quotas(conn: Connection, iccids: list[str], *, period_start: datetime) -> dict[str, int]:
    """Data each card may use in the period that starts at `period_start`."""
    cur = await conn.execute(
        """
        SELECT iccid, sum(data_bytes)::bigint FROM iot_card_grants
        WHERE iccid = ANY(%s) AND NOT cancelled AND starts_at <= %s AND ends_at > %s
        GROUP BY iccid
        """,
        (iccids, period_start, period_start),
    )
    return {str(i): int(q) for i, q in await cur.fetchall()}


# --- verification ------------------------------------------------------------------------


async def take_id_slot(conn: Connection, id_hash: bytes) -> bool:
    """Count one more card for the ID; False when it already holds ten (row-locked)."""
    cur = await conn.execute(
        """
        INSERT INTO iot_id_holders (id_hash, cards) VALUES (%s, 1)
        ON CONFLICT (id_hash) DO UPDATE SET cards = iot_id_holders.cards + 1
        WHERE iot_id_holders.cards < 10
        RETURNING cards
        """,
        (id_hash,),
    )
    return await cur.fetchone() is not None


async def give_back_id_slot(conn: Connection, id_hash: bytes) -> None:
    await conn.execute(
        "UPDATE iot_id_holders SET cards = cards - 1 WHERE id_hash = %s AND cards > 0",
        (id_hash,),
    )


async def id_cards(conn: Connection, id_hash: bytes) -> int:
    cur = await conn.execute("SELECT cards FROM iot_id_holders WHERE id_hash = %s", (id_hash,))
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def insert_verification(conn: Connection, **values: object) -> VerificationRow:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    async with conn.cursor(row_factory=class_row(VerificationRow)) as cur:
        await cur.execute(
            f"INSERT INTO iot_verifications ({columns}) VALUES ({marks}) RETURNING {_VERIFICATION}",
            list(values.values()),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_verification(
    conn: Connection, verification_id: UUID, *, lock: bool = False
) -> VerificationRow | None:
    async with conn.cursor(row_factory=class_row(VerificationRow)) as cur:
        await cur.execute(
            f"SELECT {_VERIFICATION} FROM iot_verifications WHERE verification_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (verification_id,),
        )
        return await cur.fetchone()


async def update_verification(conn: Connection, verification_id: UUID, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_verifications SET {columns} WHERE verification_id = %s",
        [*changes.values(), verification_id],
    )


# --- refunds and invoices ----------------------------------------------------------------


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
    limit: int,
) -> list[InvoiceRow]:
    column, value = ("merchant_id", merchant_id) if merchant_id else ("buyer_id", buyer_id)
    async with conn.cursor(row_factory=class_row(InvoiceRow)) as cur:
        await cur.execute(
            f"SELECT {_INVOICE} FROM iot_invoices WHERE {column} = %s"
            " ORDER BY created_at DESC, invoice_id LIMIT %s",
            (value, limit),
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


# --- statements and buyers ---------------------------------------------------------------


async def paid_between(
    conn: Connection, merchant_id: UUID, *, since: datetime, until: datetime
) -> list[OrderRow]:
    async with conn.cursor(row_factory=class_row(OrderRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_ORDER} FROM iot_orders
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
        order = await get_order(conn, order_id)
        assert order is not None
        found.append((order, settled_at))
    return found


async def buyers_of(
    conn: Connection, merchant_id: UUID, *, buyer_id: UUID | None = None, limit: int = 500
) -> list[tuple[UUID, int, int, str | None, datetime]]:
    cur = await conn.execute(
        """
        SELECT o.buyer_id,
               (SELECT count(*) FROM iot_cards c WHERE c.merchant_id = o.merchant_id
                  AND c.holder_id = o.buyer_id),
               count(*),
               (SELECT v.name_masked FROM iot_verifications v
                WHERE v.merchant_id = o.merchant_id AND v.holder_id = o.buyer_id
                ORDER BY v.submitted_at DESC LIMIT 1),
               min(o.created_at)
        FROM iot_orders o
        WHERE o.merchant_id = %s AND (%s::uuid IS NULL OR o.buyer_id = %s::uuid)
        GROUP BY o.merchant_id, o.buyer_id
        ORDER BY min(o.created_at), o.buyer_id
        LIMIT %s
        """,
        (merchant_id, buyer_id, buyer_id, limit),
    )
    return [(r[0], int(r[1]), int(r[2]), r[3], r[4]) for r in await cur.fetchall()]


# --- usage -------------------------------------------------------------------------------


_LIVE = """
    SELECT c.iccid, c.merchant_id, c.plan_id, coalesce(m.pooled, false) AS pooled, c.state,
           c.block_reasons
    FROM iot_cards c
    LEFT JOIN iot_merchant_plans m ON m.merchant_id = c.merchant_id AND m.plan_id = c.plan_id
    WHERE c.state IN ('active', 'blocked', 'suspended')
"""


async def live_cards(conn: Connection, iccids: list[str] | None) -> list[LiveCard]:
    """Activated cards (active, blocked or suspended) with their plan's pooling: all of them,
    or those of `iccids` and the cards that share a pool with them."""
    async with conn.cursor(row_factory=class_row(LiveCard)) as cur:
        if iccids is None:
            await cur.execute(_LIVE + " ORDER BY c.iccid")
            return await cur.fetchall()
        await cur.execute(_LIVE + " AND c.iccid = ANY(%s) ORDER BY c.iccid", (iccids,))
        found = await cur.fetchall()
        pools = {(c.merchant_id, c.plan_id) for c in found if c.pooled}
        if not pools:
            return found
        await cur.execute(
            _LIVE + " AND (c.merchant_id, c.plan_id) IN"
            " (SELECT * FROM unnest(%s::uuid[], %s::uuid[])) ORDER BY c.iccid",
            ([p[0] for p in pools], [p[1] for p in pools]),
        )
        mates = await cur.fetchall()
    return sorted({c.iccid: c for c in [*found, *mates]}.values(), key=lambda c: c.iccid)


async def states_of(conn: Connection, iccids: list[str]) -> list[tuple[str, str, list[str]]]:
    cur = await conn.execute(
        "SELECT iccid, state, block_reasons FROM iot_cards WHERE iccid = ANY(%s)", (iccids,)
    )
    return [(str(i), str(s), list(r)) for i, s, r in await cur.fetchall()]


async def insert_threshold(
    conn: Connection, *, merchant_id: UUID, percent: int | None, data_bytes: int | None
) -> ThresholdRow | None:
    async with conn.cursor(row_factory=class_row(ThresholdRow)) as cur:
        await cur.execute(
            """
            INSERT INTO iot_usage_thresholds (merchant_id, percent, bytes) VALUES (%s, %s, %s)
            ON CONFLICT DO NOTHING
            RETURNING threshold_id, merchant_id, percent, bytes, created_at
            """,
            (merchant_id, percent, data_bytes),
        )
        return await cur.fetchone()


async def thresholds_of(conn: Connection, merchant_ids: list[UUID]) -> list[ThresholdRow]:
    async with conn.cursor(row_factory=class_row(ThresholdRow)) as cur:
        await cur.execute(
            """
            SELECT threshold_id, merchant_id, percent, bytes, created_at
            FROM iot_usage_thresholds WHERE merchant_id = ANY(%s)
            ORDER BY created_at, threshold_id
            """,
            (merchant_ids,),
        )
        return await cur.fetchall()


async def delete_threshold(conn: Connection, *, merchant_id: UUID, threshold_id: UUID) -> bool:
    cur = await conn.execute(
        "DELETE FROM iot_usage_thresholds WHERE merchant_id = %s AND threshold_id = %s",
        (merchant_id, threshold_id),
    )
    return cur.rowcount > 0


async def record_alert(
    conn: Connection,
    *,
    merchant_id: UUID,
    subject: str,
    iccids: list[str],
    threshold_id: UUID,
    period: date,
    used_bytes: int,
    quota_bytes: int,
    now: datetime,
) -> bool:
    cur = await conn.execute(
        """
        INSERT INTO iot_usage_alerts (merchant_id, subject, iccids, threshold_id, period,
                                      used_bytes, quota_bytes, crossed_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (subject, threshold_id, period) DO NOTHING
        """,
        (merchant_id, subject, iccids, threshold_id, period, used_bytes, quota_bytes, now),
    )
    return cur.rowcount > 0


_ALERT = """
    SELECT a.alert_id, a.merchant_id, a.subject, a.iccids, a.threshold_id, t.percent, t.bytes,
           a.period, a.used_bytes, a.quota_bytes, a.crossed_at
    FROM iot_usage_alerts a JOIN iot_usage_thresholds t USING (threshold_id)
"""


async def pending_alerts(
    conn: Connection, *, merchant_id: UUID | None, limit: int
) -> list[AlertRow]:
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            _ALERT + " WHERE a.delivered_at IS NULL AND (%s::uuid IS NULL OR a.merchant_id = %s)"
            " ORDER BY a.alert_id LIMIT %s FOR UPDATE OF a SKIP LOCKED",
            (merchant_id, merchant_id, limit),
        )
        return await cur.fetchall()


async def alerts_of(conn: Connection, merchant_id: UUID, *, limit: int) -> list[AlertRow]:
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            _ALERT + " WHERE a.merchant_id = %s ORDER BY a.alert_id DESC LIMIT %s",
            (merchant_id, limit),
        )
        return await cur.fetchall()


async def mark_delivered(conn: Connection, alert_ids: list[int], *, now: datetime) -> int:
    cur = await conn.execute(
        "UPDATE iot_usage_alerts SET delivered_at = %s"
        " WHERE alert_id = ANY(%s) AND delivered_at IS NULL",
        (now, alert_ids),
    )
    return cur.rowcount


async def cards_changed_since(conn: Connection, *, since: datetime) -> list[str]:
    cur = await conn.execute(
        """
        SELECT DISTINCT iccid FROM iot_card_history
        WHERE status = 'applied' AND applied_at > %s ORDER BY iccid
        """,
        (since,),
    )
    return [str(row[0]) for row in await cur.fetchall()]
