"""SQL of the operator's inventory: imported card batches, blocks given to merchants, and the
wholesale plans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


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


async def batch_iccids(conn: Connection, batch_id: UUID) -> list[str]:
    cur = await conn.execute(
        "SELECT iccid FROM iot_cards WHERE batch_id = %s ORDER BY iccid", (batch_id,)
    )
    return [str(r[0]) for r in await cur.fetchall()]


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


async def list_plans(
    conn: Connection,
    *,
    active: bool | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int,
) -> list[PlanRow]:
    """One page of wholesale plans, oldest first (`limit + 1` rows), all or only those
    `active` (or withdrawn)."""
    created, plan_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_PLAN} FROM iot_wholesale_plans
            WHERE (%(active)s::boolean IS NULL OR active = %(active)s)
              AND (%(created)s::timestamptz IS NULL
                   OR (created_at, plan_id) > (%(created)s, %(plan)s::uuid))
            ORDER BY created_at, plan_id LIMIT %(limit)s
            """,
            {"active": active, "created": created, "plan": plan_id, "limit": limit + 1},
        )
        return await cur.fetchall()


async def set_plan_active(conn: Connection, plan_id: UUID, active: bool) -> PlanRow | None:
    async with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        await cur.execute(
            f"UPDATE iot_wholesale_plans SET active = %s WHERE plan_id = %s RETURNING {_PLAN}",
            (active, plan_id),
        )
        return await cur.fetchone()
