"""Storing batches against the real database, each test rolled back."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowbill import db
from flowbill.db import Connection
from flowbill.settings import Settings
from ingest import service
from ingest.protocol import AppUsage, RejectReason, UsageReport, encode_report
from ingest.service import ReceivedMessage, store_batch
from tests.conftest import new_iccid

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def report_message(
    iccid: str, *, seq: int, boot: int = 1, apps: dict[str, tuple[int, int]], minute: int = 0
) -> ReceivedMessage:
    start = T0 + timedelta(minutes=minute)
    report = UsageReport(
        iccid=iccid,
        boot=boot,
        seq=seq,
        start=start,
        end=start + timedelta(minutes=1),
        apps=[AppUsage(app, up, down) for app, (up, down) in apps.items()],
    )
    return ReceivedMessage(f"flowbill/v1/sims/{iccid}/usage", encode_report(report), NOW)


async def items_of(conn: Connection, iccid: str) -> dict[str, tuple[int, int, int]]:
    cur = await conn.execute(
        "SELECT app, sum(up_bytes), sum(down_bytes), count(*) FROM usage_items"
        " WHERE iccid = %s GROUP BY app",
        (iccid,),
    )
    return {app: (int(u), int(d), int(n)) for app, u, d, n in await cur.fetchall()}


async def rollup_of(conn: Connection, iccid: str) -> dict[str, tuple[int, int, int]]:
    cur = await conn.execute(
        "SELECT app, sum(up_bytes), sum(down_bytes), sum(items) FROM usage_hourly"
        " WHERE iccid = %s GROUP BY app",
        (iccid,),
    )
    return {app: (int(u), int(d), int(n)) for app, u, d, n in await cur.fetchall()}


async def missing(conn: Connection, iccid: str, *, boot: int = 1) -> list[tuple[int, int]]:
    """The runs of sequence numbers one boot of the SIM never reported, as (first, last)."""
    ranges = await service.missing_reports(conn, iccid=iccid, boot=boot)
    return [(r.first_seq, r.last_seq) for r in ranges]


async def test_a_batch_is_stored_with_exact_bytes_and_rollups(conn: Connection) -> None:
    iccid = new_iccid()
    messages = [
        report_message(iccid, seq=1, apps={"nav.amap": (1234, 56789), "telematics": (20480, 1024)}),
        report_message(iccid, seq=2, minute=61, apps={"nav.amap": (1, 2)}),
    ]
    outcome = await store_batch(conn, messages, max_clock_skew=SKEW)
    assert (outcome.reports_stored, outcome.items_stored, outcome.duplicates) == (2, 3, 0)
    assert (outcome.up_bytes, outcome.down_bytes) == (1234 + 20480 + 1, 56789 + 1024 + 2)
    expected = {"nav.amap": (1235, 56791, 2), "telematics": (20480, 1024, 1)}
    assert await items_of(conn, iccid) == expected
    assert await rollup_of(conn, iccid) == expected
    cur = await conn.execute(
        "SELECT hour, app, up_bytes FROM usage_hourly WHERE iccid = %s ORDER BY hour, app",
        (iccid,),
    )
    assert await cur.fetchall() == [
        (T0, "nav.amap", 1234),
        (T0, "telematics", 20480),
        (T0 + timedelta(hours=1), "nav.amap", 1),
    ]


async def test_duplicates_in_and_across_batches_are_stored_once(conn: Connection) -> None:
    iccid = new_iccid()
    first = report_message(iccid, seq=5, apps={"music.qq": (100, 1_000_000)})
    outcome = await store_batch(conn, [first, first, first], max_clock_skew=SKEW)
    assert (outcome.reports_stored, outcome.duplicates) == (1, 2)
    again = await store_batch(conn, [first], max_clock_skew=SKEW)
    assert (again.reports_stored, again.duplicates, again.items_stored) == (0, 1, 0)
    assert await items_of(conn, iccid) == {"music.qq": (100, 1_000_000, 1)}
    assert await rollup_of(conn, iccid) == {"music.qq": (100, 1_000_000, 1)}


async def test_rejects_keep_raw_bytes_and_reason_and_do_not_block_good_reports(
    conn: Connection,
) -> None:
    iccid = new_iccid()
    topic = f"flowbill/v1/sims/{iccid}/usage"
    bad = [
        ReceivedMessage(topic, b"\xff\x00garbage", NOW),
        ReceivedMessage(topic, b'{"iccid": 1}', NOW),
        ReceivedMessage(topic, b"z" * 70_000, NOW),
    ]
    good = report_message(iccid, seq=1, apps={"ota.update": (0, 42)})
    outcome = await store_batch(conn, [bad[0], good, bad[1], bad[2]], max_clock_skew=SKEW)
    assert outcome.reports_stored == 1
    assert outcome.rejected == Counter(
        {RejectReason.NOT_UTF8: 1, RejectReason.INVALID_FIELD: 1, RejectReason.TOO_LARGE: 1}
    )
    cur = await conn.execute(
        "SELECT reason, payload, payload_size FROM ingest_rejects WHERE topic = %s"
        " ORDER BY reject_id",
        (topic,),
    )
    rows = await cur.fetchall()
    assert [(r, bytes(p)[:20], n) for r, p, n in rows] == [
        ("not_utf8", b"\xff\x00garbage", 9),
        ("invalid_field", b'{"iccid": 1}', 12),
        ("too_large", b"z" * 20, 70_000),
    ]
    assert len(bytes(rows[2][1])) == 64 * 1024  # kept up to the protocol's limit


async def test_sequence_gaps_are_counted_and_closed_by_late_reports(conn: Connection) -> None:
    iccid = new_iccid()
    apps = {"telematics": (10, 10)}
    first = await store_batch(
        conn,
        [report_message(iccid, seq=s, minute=s, apps=apps) for s in (1, 2, 5, 9)],
        max_clock_skew=SKEW,
    )
    assert first.missing_found == 5  # 3, 4, 6, 7, 8
    assert await missing(conn, iccid) == [(3, 4), (6, 8)]
    late = await store_batch(
        conn,
        [report_message(iccid, seq=s, minute=s, apps=apps) for s in (3, 4)],
        max_clock_skew=SKEW,
    )
    assert late.missing_recovered == 2
    assert await missing(conn, iccid) == [(6, 8)]
    boots = (await service.boots_with_gaps(conn, limit=1000, cursor=None)).items
    assert [(b.first_seq, b.last_seq, b.reports, b.missing) for b in boots if b.iccid == iccid] == [
        (1, 9, 6, 3)
    ]


async def test_a_reboot_starts_a_new_sequence(conn: Connection) -> None:
    iccid = new_iccid()
    apps = {"telematics": (1, 1)}
    await store_batch(
        conn,
        [report_message(iccid, boot=1, seq=s, minute=s, apps=apps) for s in (10, 11)]
        + [report_message(iccid, boot=2, seq=s, minute=20 + s, apps=apps) for s in (0, 1)],
        max_clock_skew=SKEW,
    )
    assert await missing(conn, iccid, boot=2) == []
    boots = (await service.boots_with_gaps(conn, limit=1000, cursor=None)).items
    assert all(b.iccid != iccid for b in boots)
    assert (await items_of(conn, iccid))["telematics"] == (4, 4, 4)


async def test_unprovisioned_sims_are_stored_counted_and_listed(conn: Connection) -> None:
    known, unknown = new_iccid(), new_iccid()
    assert await service.provision_sims(conn, [known, known], label="fleet A") == 1
    outcome = await store_batch(
        conn,
        [
            report_message(known, seq=1, apps={"a": (1, 1)}),
            report_message(unknown, seq=1, apps={"a": (2, 2)}),
        ],
        max_clock_skew=SKEW,
    )
    assert (outcome.reports_stored, outcome.unprovisioned) == (2, 1)

    async def unprovisioned() -> set[str]:
        found = await service.unprovisioned_sims(conn, limit=1000, cursor=None)
        return {s.iccid for s in found.items}

    assert unknown in await unprovisioned()
    assert known not in await unprovisioned()
    await service.provision_sims(conn, [unknown], label="late")
    assert unknown not in await unprovisioned()
    assert await items_of(conn, unknown) == {"a": (2, 2, 1)}


async def compact(conn: Connection, *, lookback: timedelta) -> int:
    """Compact in `conn`'s transaction, waiting for the lock.

    The session's ingest workers compact every second under the same advisory lock, so a
    first attempt may find it taken; once this transaction holds it, nobody else can.
    """
    for _ in range(100):
        removed = await service.compact_rollups(conn, now=NOW, lookback=lookback)
        if removed is not None:
            return removed
        await asyncio.sleep(0.1)
    raise AssertionError("the compaction lock stayed taken for 10 s")


async def test_compaction_merges_rollup_rows_without_changing_sums(conn: Connection) -> None:
    iccid = new_iccid()
    for seq in range(1, 6):
        await store_batch(
            conn,
            [report_message(iccid, seq=seq, minute=seq, apps={"video": (seq, 2 * seq)})],
            max_clock_skew=SKEW,
        )
    before = await rollup_of(conn, iccid)
    removed = await compact(conn, lookback=timedelta(days=10))
    assert removed >= 4
    assert await rollup_of(conn, iccid) == before == {"video": (15, 30, 5)}
    cur = await conn.execute("SELECT count(*) FROM usage_hourly WHERE iccid = %s", (iccid,))
    assert await cur.fetchone() == (1,)


async def test_retention_drops_raw_chunks_gaps_and_rejects_and_keeps_rollups(
    conn: Connection,
) -> None:
    iccid, recent = new_iccid(), new_iccid()
    long_ago = NOW - timedelta(days=500)
    old = [
        ReceivedMessage(m.topic, m.payload, long_ago)
        for m in (
            report_message(iccid, seq=1, apps={"fm.radio": (7, 70)}, minute=-60 * 24 * 500),
            report_message(iccid, seq=5, apps={"fm.radio": (1, 1)}, minute=-60 * 24 * 500 + 5),
        )
    ]
    await store_batch(conn, old, max_clock_skew=SKEW)
    await store_batch(
        conn, [report_message(recent, seq=1, apps={"nav": (1, 2)})], max_clock_skew=SKEW
    )
    topic = f"flowbill/v1/sims/{iccid}/usage"
    await store_batch(
        conn,
        [
            ReceivedMessage(topic, b"old garbage", NOW - timedelta(days=31)),
            ReceivedMessage(topic, b"new garbage", NOW - timedelta(days=29)),
        ],
        max_clock_skew=SKEW,
    )
    result = await service.apply_retention(
        conn,
        now=NOW,
        keep_raw=timedelta(days=400),
        keep_rejects=timedelta(days=30),
        ingest_horizon=timedelta(days=35),
    )
    assert result.chunks_dropped
    assert result.boots_deleted >= 1
    assert result.rejects_deleted >= 1
    assert await items_of(conn, iccid) == {}
    assert await rollup_of(conn, iccid) == {"fm.radio": (8, 71, 2)}
    # The old boot's gap (seq 2-4) went with its raw reports; a recent boot stays.
    cur = await conn.execute(
        "SELECT iccid FROM sim_boots WHERE iccid = ANY(%s)", ([iccid, recent],)
    )
    assert await cur.fetchall() == [(recent,)]
    cur = await conn.execute("SELECT payload FROM ingest_rejects WHERE topic = %s", (topic,))
    assert [bytes(p) for (p,) in await cur.fetchall()] == [b"new garbage"]
    cur = await conn.execute(
        "SELECT rejected FROM ingest_reject_tally WHERE sim = %s ORDER BY hour", (iccid,)
    )
    assert await cur.fetchall() == [(1,)]


async def test_retention_never_drops_raw_usage_a_report_could_still_be_accepted_against(
    conn: Connection,
) -> None:
    iccid = new_iccid()
    await store_batch(
        conn, [report_message(iccid, seq=1, apps={"nav": (1, 2)})], max_clock_skew=SKEW
    )
    for keep_days in (35, 20):
        with pytest.raises(ValueError, match=r"ingest horizon \(35 days\)"):
            await service.apply_retention(
                conn,
                now=NOW + timedelta(days=60),
                keep_raw=timedelta(days=keep_days),
                keep_rejects=timedelta(days=30),
                ingest_horizon=timedelta(days=35),
            )
    assert await items_of(conn, iccid) == {"nav": (1, 2, 1)}


async def test_a_report_replayed_after_retention_is_too_old_not_billed_twice(
    conn: Connection,
) -> None:
    iccid = new_iccid()
    horizon, keep_raw = timedelta(days=35), timedelta(days=36)
    first = report_message(iccid, seq=1, apps={"nav": (100, 200)})
    stored = await store_batch(conn, [first], max_clock_skew=SKEW, max_age=horizon)
    assert stored.reports_stored == 1
    later = first.received_at + keep_raw + timedelta(days=2)
    await service.apply_retention(
        conn, now=later, keep_raw=keep_raw, keep_rejects=keep_raw, ingest_horizon=horizon
    )
    assert await items_of(conn, iccid) == {}  # the raw copy dedup needs is gone
    replay = ReceivedMessage(first.topic, first.payload, later)
    outcome = await store_batch(conn, [replay], max_clock_skew=SKEW, max_age=horizon)
    assert outcome.reports_stored == 0
    assert outcome.rejected == Counter({RejectReason.TOO_OLD: 1})
    assert await items_of(conn, iccid) == {}
    assert await rollup_of(conn, iccid) == {"nav": (100, 200, 1)}  # billed once


async def test_rejects_keep_the_first_n_raw_per_sim_and_hour_and_count_the_rest(
    conn: Connection,
) -> None:
    noisy, quiet = new_iccid(), new_iccid()

    def garbage(iccid: str, n: int, at: datetime) -> list[ReceivedMessage]:
        topic = f"flowbill/v1/sims/{iccid}/usage"
        return [ReceivedMessage(topic, f"junk {i}".encode(), at) for i in range(n)]

    hour = NOW.replace(minute=0)
    first = await store_batch(
        conn, garbage(noisy, 7, hour) + garbage(quiet, 2, hour), max_clock_skew=SKEW,
        reject_payloads_per_sim_hour=5,
    )  # fmt: skip
    second = await store_batch(
        conn, garbage(noisy, 6, hour + timedelta(minutes=59)), max_clock_skew=SKEW,
        reject_payloads_per_sim_hour=5,
    )  # fmt: skip
    next_hour = await store_batch(
        conn, garbage(noisy, 3, hour + timedelta(hours=1)), max_clock_skew=SKEW,
        reject_payloads_per_sim_hour=5,
    )  # fmt: skip
    assert (first.rejects_kept, second.rejects_kept, next_hour.rejects_kept) == (7, 0, 3)
    assert sum(first.rejected.values()) == 9
    cur = await conn.execute(
        "SELECT topic, payload FROM ingest_rejects WHERE topic LIKE ANY(%s) ORDER BY reject_id",
        ([f"%{noisy}%", f"%{quiet}%"],),
    )
    kept = [(t.split("/")[3], bytes(p)) for t, p in await cur.fetchall()]
    assert kept == (
        [(noisy, f"junk {i}".encode()) for i in range(5)]
        + [(quiet, b"junk 0"), (quiet, b"junk 1")]
        + [(noisy, f"junk {i}".encode()) for i in range(3)]
    )
    cur = await conn.execute(
        "SELECT sim, hour, rejected FROM ingest_reject_tally WHERE sim = ANY(%s)"
        " ORDER BY sim = %s DESC, hour",
        ([noisy, quiet], noisy),
    )
    assert await cur.fetchall() == [
        (noisy, hour, 13),
        (noisy, hour + timedelta(hours=1), 3),
        (quiet, hour, 2),
    ]


app_names = st.sampled_from(["telematics", "nav.amap", "music.qq", "wifi.hotspot", "x.unknown"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 30),  # seq (repeats are duplicates)
            st.dictionaries(app_names, st.tuples(st.integers(0, 2**32), st.integers(0, 2**32))),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 7),
)
async def test_rollups_equal_raw_sums_whatever_the_batching(
    conn: Connection, reports: list[tuple[int, dict[str, tuple[int, int]]]], batch: int
) -> None:
    iccid = new_iccid()
    messages = [report_message(iccid, seq=seq, minute=seq * 7, apps=apps) for seq, apps in reports]
    for i in range(0, len(messages), batch):
        await store_batch(conn, messages[i : i + batch], max_clock_skew=SKEW)
    first_by_seq: dict[int, dict[str, tuple[int, int]]] = {}
    for seq, apps in reports:
        first_by_seq.setdefault(seq, apps)
    expected: dict[str, tuple[int, int, int]] = {}
    for apps in first_by_seq.values():
        for app, (up, down) in apps.items():
            u, d, n = expected.get(app, (0, 0, 0))
            expected[app] = (u + up, d + down, n + 1)
    assert await items_of(conn, iccid) == expected
    assert await rollup_of(conn, iccid) == expected


async def test_one_compaction_at_a_time(conn: Connection, settings: Settings) -> None:
    await compact(conn, lookback=timedelta(days=1))
    other = await db.connect(settings, application_name="flowbill-test")
    try:
        async with other.transaction():
            assert await service.compact_rollups(other, now=NOW, lookback=timedelta(days=1)) is None
    finally:
        await other.close()
