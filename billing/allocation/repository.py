"""SQL of the allocation run: its cursor over stored usage, allocation rows, coverage state,
the daily totals. Stored usage is ingest's: read through its view `ingest_stored_items`
(docs/protocol.md, "Read contract")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from psycopg import AsyncCopy
from psycopg.copy import AsyncQueuedLibpqWriter
from psycopg.rows import class_row

from flowbill.db import Connection

# One allocation run at a time: the cursor row is the run's lock too, but taking this first
# lets a second runner skip instead of queueing behind the first.
RUN_LOCK = 0x466C6F7762696C6C  # "Flowbill"


async def try_run_lock(conn: Connection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (RUN_LOCK,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def wait_for_run(conn: Connection) -> None:
    """Wait until no allocation batch is under way (held until the caller's commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RUN_LOCK,))


async def cursor_and_horizon(conn: Connection) -> tuple[int, int]:
    """(next transaction id to read, oldest transaction id that may still be running).

    Every transaction below the horizon has ended, so its items are final."""
    cur = await conn.execute(
        """SELECT next_xid, pg_snapshot_xmin(pg_current_snapshot())::text::bigint
           FROM billing_cursor FOR UPDATE"""
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def items_per_transaction(
    conn: Connection, *, from_xid: int, until_xid: int
) -> list[tuple[int, int]]:
    """(transaction id, items stored) of the ended transactions in [from, until)."""
    cur = await conn.execute(
        """SELECT ingest_xid, count(*) FROM ingest_stored_items
           WHERE ingest_xid >= %s AND ingest_xid < %s GROUP BY 1 ORDER BY 1""",
        (from_xid, until_xid),
    )
    return [(int(r[0]), int(r[1])) for r in await cur.fetchall()]


ItemTuple = tuple[datetime, str, int, int, str, int, datetime]


async def items(conn: Connection, *, from_xid: int, to_xid: int) -> list[ItemTuple]:
    """(window start, iccid, boot, seq, app, bytes, received at) of the transactions'
    items."""
    async with conn.cursor(binary=True) as cur:
        await cur.execute(
            """SELECT window_start, iccid, boot, seq, app, bytes, received_at
               FROM ingest_stored_items WHERE ingest_xid >= %s AND ingest_xid <= %s
               ORDER BY window_start, iccid, boot, seq, app COLLATE "C"
            """,
            (from_xid, to_xid),
        )
        return await cur.fetchall()


async def add_daily(
    conn: Connection, rows: Sequence[tuple[date, str, str, str, str, UUID | None, int, int]]
) -> None:
    """Append a batch's (day, iccid, app, category, payer kind, payer, bytes, items) sums."""
    if not rows:
        return
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY allocation_daily (day, iccid, app, category, payer_kind, payer_id, bytes, items)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["date", "text", "text", "text", "text", "uuid", "int8", "int8"])
        for row in rows:
            await copy.write_row(row)


async def compact_daily(conn: Connection, *, since: date) -> int:
    """Merge each key's daily rows from `since` on into one; returns the rows removed."""
    cur = await conn.execute(
        """
        WITH keys AS (
            SELECT day, iccid, app, payer_kind, payer_id FROM allocation_daily
            WHERE day >= %(since)s
            GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1
        ),
        moved AS (
            DELETE FROM allocation_daily d USING keys k
            WHERE d.day = k.day AND d.iccid = k.iccid AND d.app = k.app
              AND d.payer_kind = k.payer_kind
              AND d.payer_id IS NOT DISTINCT FROM k.payer_id AND d.day >= %(since)s
            RETURNING d.*
        ),
        merged AS (
            INSERT INTO allocation_daily
                (day, iccid, app, category, payer_kind, payer_id, bytes, items)
            SELECT day, iccid, app, max(category), payer_kind, payer_id, sum(bytes), sum(items)
            FROM moved GROUP BY day, iccid, app, payer_kind, payer_id
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM moved) - (SELECT count(*) FROM merged)
        """,
        {"since": since},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def next_batch_id(conn: Connection) -> int:
    cur = await conn.execute(
        "SELECT nextval(pg_get_serial_sequence('billing_batches', 'batch_id'))"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# An allocation row: the columns of `allocations`, in order.
AllocationRow = tuple[
    datetime, str, int, int, str, str, date, str, UUID | None, int | None, datetime | None,
    int, bool, int,
]  # fmt: skip

_ALLOCATION_COLUMNS = (
    "window_start, iccid, boot, seq, app, category, period, payer_kind, payer_id, policy_id,"
    " terms_from, bytes, adjustment, batch_id"
)


@contextlib.asynccontextmanager
async def allocation_copy(conn: Connection) -> AsyncIterator[AsyncCopy]:
    """One COPY into `allocations` that stays open while the run computes a batch.

    Rows written to it are queued, and a task of psycopg's sends them whenever the run
    yields: the server stores one chunk (the rows and their indexes) while the run computes
    the next, and nothing waits unless the server falls behind. Leaving the block ends the
    COPY and waits for the server to finish it."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            f"COPY allocations ({_ALLOCATION_COLUMNS}) FROM STDIN (FORMAT BINARY)",
            writer=AsyncQueuedLibpqWriter(cur),
        ) as copy,
    ):
        copy.set_types(
            ["timestamptz", "text", "int4", "int8", "text", "text", "date", "text", "uuid",
             "int8", "timestamptz", "int8", "bool", "int8"]
        )  # fmt: skip
        yield copy


async def finish_batch(
    conn: Connection,
    *,
    batch_id: int,
    from_xid: int,
    to_xid: int,
    next_xid: int,
    items: int,
    allocations: int,
    data_bytes: int,
    adjustments: int,
    oldest_received_at: datetime | None,
) -> None:
    await conn.execute(
        """INSERT INTO billing_batches (batch_id, from_xid, to_xid, items, allocations, bytes,
                                        adjustments, oldest_received_at)
           OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (batch_id, from_xid, to_xid, items, allocations, data_bytes, adjustments,
         oldest_received_at),
    )  # fmt: skip
    await advance_cursor(conn, next_xid)


async def advance_cursor(conn: Connection, next_xid: int) -> None:
    await conn.execute(
        "UPDATE billing_cursor SET next_xid = %s, updated_at = now() WHERE next_xid < %s",
        (next_xid, next_xid),
    )


async def record_wallet_draws(
    conn: Connection, batch_id: int, draws: Sequence[tuple[UUID, int, int]]
) -> None:
    if not draws:
        return
    await conn.execute(
        """INSERT INTO wallet_draws (batch_id, driver_id, bytes, txn_id)
           SELECT %s, * FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[])""",
        (batch_id, [d[0] for d in draws], [d[1] for d in draws], [d[2] for d in draws]),
    )


@dataclass(frozen=True, slots=True)
class Progress:
    next_xid: int
    batches: int
    items_allocated: int
    backlog_items: int
    last_batch_at: datetime | None


async def progress(conn: Connection) -> Progress:
    """The cursor, the batches so far, and the items stored (by ended transactions) that no
    batch has read yet."""
    async with conn.cursor(row_factory=class_row(Progress)) as cur:
        await cur.execute(
            """SELECT c.next_xid,
                      (SELECT count(*) FROM billing_batches) AS batches,
                      (SELECT coalesce(sum(items), 0) FROM billing_batches)::bigint
                          AS items_allocated,
                      (SELECT count(*) FROM ingest_stored_items
                        WHERE ingest_xid >= c.next_xid
                          AND ingest_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint)
                          AS backlog_items,
                      (SELECT max(finished_at) FROM billing_batches) AS last_batch_at
               FROM billing_cursor c"""
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def unallocated_items(conn: Connection) -> int:
    """Items stored (by ended transactions) that no batch has read yet."""
    cur = await conn.execute(
        """SELECT count(*) FROM ingest_stored_items, billing_cursor
           WHERE ingest_xid >= next_xid
             AND ingest_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"""
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# --- Coverage ----------------------------------------------------------------------------------


async def coverage_payloads(conn: Connection, iccids: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """iccid → (payload as stored, published)."""
    cur = await conn.execute(
        "SELECT iccid, payload::text, published_at IS NOT NULL FROM sim_coverage"
        " WHERE iccid = ANY(%s)",
        (list(iccids),),
    )
    return {r[0]: (r[1], bool(r[2])) for r in await cur.fetchall()}


async def save_coverage(conn: Connection, rows: Sequence[tuple[str, str]]) -> None:
    """Store new coverage payloads, not yet published."""
    if not rows:
        return
    ordered = sorted(rows)
    await conn.execute(
        """INSERT INTO sim_coverage AS c (iccid, payload)
           SELECT * FROM unnest(%s::text[], %s::jsonb[])
           ON CONFLICT (iccid) DO UPDATE
           SET payload = excluded.payload, published_at = NULL, changed_at = now()""",
        ([r[0] for r in ordered], [r[1] for r in ordered]),
    )


async def unpublished_coverage(conn: Connection, *, limit: int) -> list[tuple[str, str]]:
    cur = await conn.execute(
        "SELECT iccid, payload::text FROM sim_coverage WHERE published_at IS NULL"
        " ORDER BY changed_at LIMIT %s",
        (limit,),
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def mark_published(conn: Connection, rows: Sequence[tuple[str, str]]) -> None:
    """Mark published, unless the payload changed again meanwhile."""
    if not rows:
        return
    await conn.execute(
        """UPDATE sim_coverage c SET published_at = now()
           FROM unnest(%s::text[], %s::jsonb[]) AS p(iccid, payload)
           WHERE c.iccid = p.iccid AND c.payload = p.payload""",
        ([r[0] for r in rows], [r[1] for r in rows]),
    )


async def coverage_of(conn: Connection, iccid: str) -> str | None:
    cur = await conn.execute("SELECT payload::text FROM sim_coverage WHERE iccid = %s", (iccid,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def sims_with_wallet_state(conn: Connection) -> list[tuple[str, bool]]:
    """(iccid, whether its last coverage said the wallet holds data) for SIMs whose coverage
    depends on the wallet."""
    cur = await conn.execute(
        "SELECT iccid, (payload->>'wallet_has_data')::boolean FROM sim_coverage"
        " WHERE payload ? 'wallet_has_data'"
    )
    return [(r[0], bool(r[1])) for r in await cur.fetchall()]


async def all_coverage_sims(conn: Connection) -> list[str]:
    cur = await conn.execute("SELECT iccid FROM sim_coverage ORDER BY iccid")
    return [r[0] for r in await cur.fetchall()]


async def sims_with_blocked_apps(conn: Connection) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM sim_coverage WHERE jsonb_array_length(payload->'blocked') > 0"
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


# --- Usage views (the driver page) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DailyUsageRow:
    iccid: str
    day: date
    app: str
    payer_kind: str
    payer_id: UUID | None
    bytes: int


async def daily_usage(
    conn: Connection, iccids: Sequence[str], *, first_day: date, end_day: date
) -> list[DailyUsageRow]:
    """The SIMs' bytes per day, app and payer from the daily rollup, days in [first, end)."""
    async with conn.cursor(row_factory=class_row(DailyUsageRow)) as cur:
        await cur.execute(
            """SELECT iccid, day, app, payer_kind, payer_id, sum(bytes)::bigint AS bytes
               FROM allocation_daily
               WHERE iccid = ANY(%s) AND day >= %s AND day < %s
               GROUP BY iccid, day, app, payer_kind, payer_id
               ORDER BY iccid, day, app""",
            (list(iccids), first_day, end_day),
        )
        return await cur.fetchall()
