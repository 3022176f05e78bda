"""SQL of the metering domain: usage reports, items, hourly rollups, boots, rejects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from flowbill.db import Connection

# Per-connection staging table: each batch lands here by one binary COPY, and one
# statement then deduplicates and spreads it over the real tables.
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    iccid text, boot integer, seq bigint,
    window_start timestamptz, window_end timestamptz,
    apps text[], ups bigint[], downs bigint[],
    received_at timestamptz
) ON COMMIT DELETE ROWS
"""

_STAGE_COPY = (
    "COPY ingest_stage (iccid, boot, seq, window_start, window_end, apps, ups, downs, received_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_STAGE_TYPES = [
    "text", "int4", "int8", "timestamptz", "timestamptz", "text[]", "int8[]", "int8[]",
    "timestamptz",
]  # fmt: skip

# Rows are inserted in key order so that two workers writing overlapping batches take
# their row locks in the same order and cannot deadlock.
_STORE_STAGED = """
WITH new_reports AS (
    INSERT INTO usage_reports AS r
        (iccid, boot, seq, window_start, window_end, apps, received_at)
    SELECT iccid, boot, seq, window_start, window_end, cardinality(apps), received_at
    FROM ingest_stage
    ORDER BY iccid, boot, seq, window_start
    ON CONFLICT DO NOTHING
    RETURNING r.iccid, r.boot, r.seq, r.window_start
),
fresh AS MATERIALIZED (
    SELECT s.* FROM ingest_stage s JOIN new_reports n USING (iccid, boot, seq, window_start)
),
fresh_items AS MATERIALIZED (
    SELECT f.window_start, f.window_end, f.iccid, f.boot, f.seq,
           a.app, a.up, a.down, f.received_at
    FROM fresh f CROSS JOIN LATERAL unnest(f.apps, f.ups, f.downs) AS a(app, up, down)
),
stored_items AS (
    INSERT INTO usage_items
        (window_start, window_end, iccid, boot, seq, app, up_bytes, down_bytes, received_at)
    SELECT * FROM fresh_items
),
hourly AS (
    INSERT INTO usage_hourly (hour, iccid, app, up_bytes, down_bytes, items)
    SELECT time_bucket('1 hour', window_start), iccid, app, sum(up), sum(down), count(*)
    FROM fresh_items
    GROUP BY 1, 2, 3
),
boots AS (
    INSERT INTO sim_boots AS b
        (iccid, boot, first_seq, last_seq, reports, first_seen, last_seen)
    SELECT iccid, boot, min(seq), max(seq), count(*), min(received_at), max(received_at)
    FROM fresh
    GROUP BY iccid, boot
    ORDER BY iccid, boot
    ON CONFLICT (iccid, boot) DO UPDATE SET
        first_seq = least(b.first_seq, excluded.first_seq),
        last_seq = greatest(b.last_seq, excluded.last_seq),
        reports = b.reports + excluded.reports,
        last_seen = greatest(b.last_seen, excluded.last_seen)
    RETURNING b.iccid, b.boot, greatest(b.last_seq - b.first_seq + 1 - b.reports, 0) AS missing
),
-- The main query reads sim_boots as it was before this statement: old missing counts.
missing_change AS (
    SELECT n.missing - coalesce(greatest(o.last_seq - o.first_seq + 1 - o.reports, 0), 0) AS delta
    FROM boots n LEFT JOIN sim_boots o USING (iccid, boot)
)
SELECT
    (SELECT count(*) FROM fresh) AS reports,
    (SELECT count(*) FROM fresh_items) AS items,
    (SELECT coalesce(sum(up), 0) FROM fresh_items)::bigint AS up_bytes,
    (SELECT coalesce(sum(down), 0) FROM fresh_items)::bigint AS down_bytes,
    (SELECT count(*) FROM fresh f
      WHERE NOT EXISTS (SELECT 1 FROM sims s WHERE s.iccid = f.iccid)) AS unprovisioned,
    (SELECT coalesce(sum(delta) FILTER (WHERE delta > 0), 0) FROM missing_change)::bigint
        AS missing_found,
    (SELECT coalesce(-sum(delta) FILTER (WHERE delta < 0), 0) FROM missing_change)::bigint
        AS missing_recovered
"""


@dataclass(frozen=True, slots=True)
class StagedReport:
    iccid: str
    boot: int
    seq: int
    window_start: datetime
    window_end: datetime
    apps: list[str]
    ups: list[int]
    downs: list[int]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class RejectRow:
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int


@dataclass(frozen=True, slots=True)
class StoredCounts:
    reports: int
    items: int
    up_bytes: int
    down_bytes: int
    unprovisioned: int
    missing_found: int
    missing_recovered: int


async def store_reports(conn: Connection, reports: Sequence[StagedReport]) -> StoredCounts:
    """Store the reports not stored before, with their items, rollups and boot sequences."""
    if not reports:
        return StoredCounts(0, 0, 0, 0, 0, 0, 0)
    async with conn.cursor() as cur:
        await cur.execute(_STAGE_DDL)
        # Empty after every commit; cleared here too for callers batching in one transaction.
        await cur.execute("DELETE FROM ingest_stage")
        async with cur.copy(_STAGE_COPY) as copy:
            copy.set_types(_STAGE_TYPES)
            for r in reports:
                await copy.write_row(
                    (r.iccid, r.boot, r.seq, r.window_start, r.window_end,
                     r.apps, r.ups, r.downs, r.received_at)
                )  # fmt: skip
        await cur.execute(_STORE_STAGED)
        row = await cur.fetchone()
    assert row is not None
    return StoredCounts(*(int(value) for value in row))


@dataclass(frozen=True, slots=True)
class TallyRow:
    sim: str
    hour: datetime
    rejected: int


async def tally_rejects(
    conn: Connection, counts: Sequence[TallyRow]
) -> dict[tuple[str, datetime], int]:
    """Add rejects to their SIM-hour counts; returns each SIM-hour's total after this batch.

    The rows stay locked until commit, so concurrent workers count one after the other."""
    if not counts:
        return {}
    ordered = sorted(counts, key=lambda c: (c.sim, c.hour))  # one lock order: no deadlock
    cur = await conn.execute(
        """
        INSERT INTO ingest_reject_tally AS t (sim, hour, rejected)
        SELECT sim, hour, rejected
        FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[]) AS u(sim, hour, rejected)
        ON CONFLICT (sim, hour) DO UPDATE SET rejected = t.rejected + excluded.rejected
        RETURNING t.sim, t.hour, t.rejected
        """,
        (
            [c.sim for c in ordered],
            [c.hour for c in ordered],
            [c.rejected for c in ordered],
        ),
    )
    return {(sim, hour): int(total) for sim, hour, total in await cur.fetchall()}


async def store_rejects(conn: Connection, rejects: Iterable[RejectRow]) -> None:
    """Keep what could not be stored as usage, raw, with its reason."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY ingest_rejects (received_at, topic, reason, detail, payload, payload_size)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["timestamptz", "text", "text", "text", "bytea", "int4"])
        for r in rejects:
            await copy.write_row(
                (r.received_at, r.topic, r.reason, r.detail, r.payload, r.payload_size)
            )


@dataclass(frozen=True, slots=True)
class RejectRecord:
    reject_id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload_size: int
    payload: bytes


async def list_rejects(
    conn: Connection, *, reason: str | None, after: int | None, limit: int
) -> list[RejectRecord]:
    """Rejects (of a reason, if given), newest first, after the reject `after`."""
    async with conn.cursor(row_factory=class_row(RejectRecord)) as cur:
        await cur.execute(
            """
            SELECT reject_id, received_at, topic, reason, detail, payload_size, payload
            FROM ingest_rejects
            WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)
              AND (%(after)s::bigint IS NULL OR reject_id < %(after)s)
            ORDER BY reject_id DESC
            LIMIT %(limit)s
            """,
            {"reason": reason, "after": after, "limit": limit},
        )
        return await cur.fetchall()


async def count_rejects_by_reason(conn: Connection) -> dict[str, int]:
    cur = await conn.execute("SELECT reason, count(*) FROM ingest_rejects GROUP BY reason")
    return {reason: int(n) for reason, n in await cur.fetchall()}


@dataclass(frozen=True, slots=True)
class BootSequence:
    iccid: str
    boot: int
    first_seq: int
    last_seq: int
    reports: int
    missing: int
    last_seen: datetime


async def list_boots_with_gaps(
    conn: Connection, *, after: tuple[datetime, str, int] | None, limit: int
) -> list[BootSequence]:
    """Boots with lost reports, last seen first, after the (last_seen, iccid, boot) key."""
    async with conn.cursor(row_factory=class_row(BootSequence)) as cur:
        await cur.execute(
            """
            SELECT iccid, boot, first_seq, last_seq, reports,
                   last_seq - first_seq + 1 - reports AS missing, last_seen
            FROM sim_boots
            WHERE last_seq - first_seq + 1 - reports > 0
              AND (%(seen)s::timestamptz IS NULL
                   OR (last_seen, iccid, boot) < (%(seen)s, %(iccid)s, %(boot)s))
            ORDER BY last_seen DESC, iccid DESC, boot DESC
            LIMIT %(limit)s
            """,
            {
                "seen": after and after[0], "iccid": after and after[1],
                "boot": after and after[2], "limit": limit,
            },
        )  # fmt: skip
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class SeqRange:
    first_seq: int
    last_seq: int


async def missing_seq_ranges(conn: Connection, *, iccid: str, boot: int) -> list[SeqRange]:
    """The (first, last) sequence numbers of each run of reports not received."""
    async with conn.cursor(row_factory=class_row(SeqRange)) as cur:
        await cur.execute(
            """
            SELECT seq + 1 AS first_seq, next_seq - 1 AS last_seq FROM (
                SELECT seq, lead(seq) OVER (ORDER BY seq) AS next_seq
                FROM (SELECT DISTINCT seq FROM usage_reports WHERE iccid = %s AND boot = %s) d
            ) s
            WHERE next_seq > seq + 1
            ORDER BY 1
            """,
            (iccid, boot),
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class HourlyUsage:
    hour: datetime
    app: str
    up_bytes: int
    down_bytes: int
    items: int


async def hourly_usage(
    conn: Connection,
    *,
    iccid: str,
    since: datetime,
    until: datetime,
    after: tuple[datetime, str] | None = None,
    limit: int | None = None,
) -> list[HourlyUsage]:
    """One SIM's usage per hour and app in [since, until): all of it, or `limit` rows after
    the (hour, app) key."""
    async with conn.cursor(row_factory=class_row(HourlyUsage)) as cur:
        await cur.execute(
            """
            SELECT hour, app, sum(up_bytes)::bigint AS up_bytes,
                   sum(down_bytes)::bigint AS down_bytes, sum(items)::bigint AS items
            FROM usage_hourly
            WHERE iccid = %(iccid)s AND hour >= %(since)s AND hour < %(until)s
              AND (%(hour)s::timestamptz IS NULL OR (hour, app) > (%(hour)s, %(app)s))
            GROUP BY hour, app
            ORDER BY hour, app
            LIMIT %(limit)s
            """,
            {
                "iccid": iccid, "since": since, "until": until, "hour": after and after[0],
                "app": after and after[1], "limit": limit,
            },
        )  # fmt: skip
        return await cur.fetchall()


async def usage_totals(
    conn: Connection, *, iccids: Sequence[str], since: datetime, until: datetime
) -> dict[str, int]:
    """Bytes up and down per SIM in [since, until) from the hourly rollup (hour-aligned
    bounds); SIMs with no usage are left out."""
    cur = await conn.execute(
        """
        SELECT iccid, sum(up_bytes + down_bytes)::bigint
        FROM usage_hourly
        WHERE iccid = ANY(%s) AND hour >= %s AND hour < %s
        GROUP BY iccid
        """,
        (list(iccids), since, until),
    )
    return {str(iccid): int(total) for iccid, total in await cur.fetchall()}


async def compact_hourly(conn: Connection, *, since: datetime, until: datetime) -> int:
    """Merge each key's rollup rows in [since, until) into one; returns rows removed."""
    cur = await conn.execute(
        """
        WITH keys AS (
            SELECT hour, iccid, app FROM usage_hourly
            WHERE hour >= %(since)s AND hour < %(until)s
            GROUP BY 1, 2, 3 HAVING count(*) > 1
        ),
        moved AS (
            DELETE FROM usage_hourly h USING keys k
            WHERE h.hour = k.hour AND h.iccid = k.iccid AND h.app = k.app
              AND h.hour >= %(since)s AND h.hour < %(until)s
            RETURNING h.*
        ),
        merged AS (
            INSERT INTO usage_hourly (hour, iccid, app, up_bytes, down_bytes, items)
            SELECT hour, iccid, app, sum(up_bytes), sum(down_bytes), sum(items)
            FROM moved GROUP BY 1, 2, 3
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM moved) - (SELECT count(*) FROM merged)
        """,
        {"since": since, "until": until},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# Any fixed number: it names the lock that lets one worker at a time compact the rollup.
_COMPACTION_LOCK = 0x466C_6F77_0001


async def try_compaction_lock(conn: Connection) -> bool:
    """Take the transaction-scoped compaction lock if no one else holds it."""
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_COMPACTION_LOCK,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def drop_raw_chunks(conn: Connection, *, older_than: datetime) -> list[str]:
    """Drop raw report and item chunks wholly before `older_than`; rollups stay."""
    dropped: list[str] = []
    for table in ("usage_items", "usage_reports"):
        cur = await conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => %s)", (table, older_than)
        )
        dropped.extend(str(name) for (name,) in await cur.fetchall())
    return dropped


async def delete_rejects(conn: Connection, *, older_than: datetime) -> int:
    """Delete rejects received before `older_than`, and their SIM-hour counts."""
    cur = await conn.execute("DELETE FROM ingest_rejects WHERE received_at < %s", (older_than,))
    await conn.execute("DELETE FROM ingest_reject_tally WHERE hour < %s", (older_than,))
    return cur.rowcount


async def delete_boots(conn: Connection, *, last_seen_before: datetime) -> int:
    """Delete the sequence records (and so the gaps) of boots not heard from since."""
    cur = await conn.execute("DELETE FROM sim_boots WHERE last_seen < %s", (last_seen_before,))
    return cur.rowcount


async def provision_sims(conn: Connection, iccids: Sequence[str], *, label: str) -> int:
    """Register SIMs; already known ones are left as they are. Returns how many were new."""
    cur = await conn.execute(
        """
        INSERT INTO sims (iccid, label)
        SELECT i, %s FROM unnest(%s::text[]) AS i ORDER BY i
        ON CONFLICT (iccid) DO NOTHING
        """,
        (label, list(iccids)),
    )
    return cur.rowcount


@dataclass(frozen=True, slots=True)
class UnprovisionedSim:
    iccid: str
    reports: int
    first_seen: datetime
    last_seen: datetime


async def list_unprovisioned(
    conn: Connection, *, after: tuple[datetime, str] | None, limit: int
) -> list[UnprovisionedSim]:
    """Unprovisioned SIMs, last seen first, after the (last_seen, iccid) key."""
    async with conn.cursor(row_factory=class_row(UnprovisionedSim)) as cur:
        await cur.execute(
            """
            SELECT b.iccid, sum(b.reports)::bigint AS reports,
                   min(b.first_seen) AS first_seen, max(b.last_seen) AS last_seen
            FROM sim_boots b
            WHERE NOT EXISTS (SELECT 1 FROM sims s WHERE s.iccid = b.iccid)
            GROUP BY b.iccid
            HAVING %(seen)s::timestamptz IS NULL
                OR (max(b.last_seen), b.iccid) < (%(seen)s, %(iccid)s)
            ORDER BY max(b.last_seen) DESC, b.iccid DESC
            LIMIT %(limit)s
            """,
            {"seen": after and after[0], "iccid": after and after[1], "limit": limit},
        )
        return await cur.fetchall()
