"""Ingest under abuse: floods, oversize packets, stale replays and unbounded rejects.

Each attack is refused (the worker stops reading, the broker cuts the sender, the report is
`too_old`, the reject is only counted) and nothing else is affected: every QoS 1 report the
broker accepted is stored exactly once, other reports land, the worker's memory stays bounded.
The flood test stops the database, so it runs on a stack of its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import httpx
import psycopg
import pytest

from devstack import localstack
from flowbill.migrate import apply_migrations
from flowbill.settings import Settings
from ingest import mqtt_session
from ingest.protocol import MAX_PAYLOAD_BYTES
from tests.conftest import (
    REPO,
    IngestProcess,
    bearer,
    new_iccid,
    settings_for,
    wait_for,
)
from tests.ingest.test_end_to_end import publish, report, report_count
from tests.ingest.test_resilience import (
    assert_stored_exactly_once,
    stream,
    wait_until_stored,
)

MIB = 1024 * 1024
QUEUE_BYTES = 8 * MIB
FLOOD_PAYLOAD = 60 * 1024
FLOOD_MESSAGES = 1600  # ~94 MiB: far more than the worker may hold
KEPT_PER_SIM_HOUR = 5


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localstack.LocalStack]:
    root = tmp_path_factory.mktemp("ingest-abuse")
    running = localstack.up(root)
    apply_migrations(running.database_url)
    yield running
    localstack.down(root)


def memory_kib(pid: int) -> dict[str, int]:
    """The process's resident set now (VmRSS) and at its peak (VmHWM), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def flood(settings: Settings, topic: str, count: int) -> None:
    """`count` QoS 0 messages of 60 KiB, as fast as the broker takes them."""
    junk = b"\x00" * FLOOD_PAYLOAD
    async with mqtt_session.broker_client(settings) as client:
        client.pending_calls_threshold = 100_000
        for start in range(0, count, 100):
            await asyncio.gather(
                *(client.publish(topic, junk, qos=0) for _ in range(min(100, count - start)))
            )


def _rows(settings: Settings, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database_dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def test_a_qos0_flood_while_the_database_is_down_leaves_memory_bounded_and_loses_no_accepted_report(  # noqa: E501
    own_stack: localstack.LocalStack, tmp_path: Path
) -> None:
    settings = settings_for(own_stack)
    worker = IngestProcess(
        settings,
        client_id="abuse-flood",
        log_path=tmp_path / "flood.log",
        env={
            "FLOWBILL_INGEST_QUEUE_BYTES": str(QUEUE_BYTES),
            "FLOWBILL_INGEST_REJECT_PAYLOADS_PER_SIM_HOUR": str(KEPT_PER_SIM_HOUR),
        },
    )
    worker.start()
    try:
        assert worker.process is not None
        pid = worker.process.pid
        attacker = new_iccid()
        iccids, reports = stream(2_000)
        before = memory_kib(pid)["VmRSS"]

        localstack.stop_postgres(own_stack)
        # Accepted reports (each publish returns on the broker's PUBACK) and the flood,
        # interleaved, while nothing can be committed.
        await asyncio.gather(
            publish(settings, reports[:1_000]),
            flood(settings, f"flowbill/v1/sims/{attacker}/usage", FLOOD_MESSAGES),
            publish(settings, reports[1_000:]),
        )

        def stopped_reading() -> bool:
            return worker.metric("flowbill_ingest_read_pauses_total") >= 1

        await wait_for(_sync(stopped_reading))
        # Whatever else the socket had is read within moments; then nothing more is.
        held = worker.metric("flowbill_ingest_pending_bytes")
        await asyncio.sleep(1.0)
        assert worker.metric("flowbill_ingest_pending_bytes") == held
        assert QUEUE_BYTES <= held < QUEUE_BYTES + 2 * FLOOD_PAYLOAD
        peak = memory_kib(pid)["VmHWM"]
        grown_mib = (peak - before) / 1024
        # Unbounded, the worker would hold the whole flood (~94 MiB) and the reports.
        assert grown_mib < QUEUE_BYTES / MIB + 24, f"worker grew by {grown_mib:.0f} MiB"

        localstack.start_postgres(own_stack)
        await asyncio.to_thread(wait_until_stored, settings, iccids, len(reports))

        def drained() -> bool:
            return worker.metric("flowbill_ingest_pending_messages") == 0

        await wait_for(_sync(drained), timeout=60)
        assert_stored_exactly_once(settings, iccids, len(reports))
        # The flood is rejects: a few kept with their bytes per hour, every one counted.
        kept = _rows(
            settings,
            "SELECT count(*), max(payload_size) FROM ingest_rejects WHERE topic = %s",
            f"flowbill/v1/sims/{attacker}/usage",
        )
        counted = _rows(
            settings,
            "SELECT coalesce(sum(rejected), 0), count(*) FROM ingest_reject_tally WHERE sim = %s",
            attacker,
        )
        received = worker.metric("flowbill_ingest_messages_received_total") - len(reports)
        (kept_rows, kept_size), (counted_rows, hours) = kept[0], counted[0]
        assert 0 < int(str(kept_rows)) <= KEPT_PER_SIM_HOUR * int(str(hours))
        assert kept_size == FLOOD_PAYLOAD
        assert int(str(counted_rows)) >= received  # redeliveries of QoS 1 only add reports
        assert int(str(counted_rows)) <= FLOOD_MESSAGES
    finally:
        localstack.start_postgres(own_stack)
        worker.stop()
        await worker.retire()


def _sync(check: object) -> object:
    async def predicate() -> bool:
        return bool(await asyncio.to_thread(check))  # type: ignore[arg-type]

    return predicate


async def test_a_packet_over_the_brokers_limit_cuts_its_sender_and_one_just_over_64_kib_is_kept(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
) -> None:
    iccid = new_iccid()
    topic = f"flowbill/v1/sims/{iccid}/usage"
    # Over the broker's max_packet_size: the broker disconnects the sender, nothing arrives.
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt_session.broker_client(settings) as client:
            await client.publish(topic, b"{" + b" " * (128 * 1024) + b"}", qos=1, timeout=10)
    # Just over the protocol's limit: received, rejected, kept (first 64 KiB) and counted.
    await publish(
        settings,
        [
            (topic, b"{" + b" " * (MAX_PAYLOAD_BYTES + 500) + b"}"),
            (topic, report(iccid, 1, {"nav.amap": (1, 2)})),
        ],
    )

    async def landed() -> bool:
        return await report_count(committed_conn, iccid) == 1

    await wait_for(landed)
    cur = await committed_conn.execute(
        "SELECT reason, payload_size FROM ingest_rejects WHERE topic = %s", (topic,)
    )
    assert await cur.fetchall() == [("too_large", MAX_PAYLOAD_BYTES + 502)]


async def test_a_report_older_than_the_horizon_is_refused_as_too_old_and_nothing_is_billed(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
    http: httpx.AsyncClient,
    operator_key: str,
) -> None:
    iccid = new_iccid()
    topic = f"flowbill/v1/sims/{iccid}/usage"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    stale = [now - timedelta(days=36), now - timedelta(days=400)]
    messages = [
        (topic, _report_at(iccid, seq, start)) for seq, start in enumerate(stale, start=1)
    ] + [(topic, report(iccid, 3, {"nav.amap": (10, 20)}))]
    await publish(settings, messages)

    async def landed() -> bool:
        cur = await committed_conn.execute(
            "SELECT count(*) FROM ingest_rejects WHERE topic = %s", (topic,)
        )
        row = await cur.fetchone()
        return bool(row and row[0] == 2) and await report_count(committed_conn, iccid) == 1

    await wait_for(landed)
    cur = await committed_conn.execute(
        "SELECT seq, window_start FROM usage_reports WHERE iccid = %s", (iccid,)
    )
    assert [seq for seq, _ in await cur.fetchall()] == [3]
    cur = await committed_conn.execute(
        "SELECT count(*) FROM usage_hourly WHERE iccid = %s AND hour < %s",
        (iccid, now - timedelta(days=35)),
    )
    assert await cur.fetchone() == (0,)
    listed = await http.get(
        "/v1/operator/ingest/rejects", params={"reason": "too_old"}, headers=bearer(operator_key)
    )
    assert listed.status_code == 200, listed.text
    mine = [r for r in listed.json()["items"] if r["topic"] == topic]
    assert len(mine) == 2
    assert all("35 days" in r["detail"] for r in mine)


def _report_at(iccid: str, seq: int, start: datetime) -> bytes:
    return (
        f'{{"iccid": "{iccid}", "boot": 1, "seq": {seq}, "start": "{start.isoformat()}",'
        f' "end": "{(start + timedelta(minutes=1)).isoformat()}",'
        ' "apps": [{"app": "nav.amap", "up": 1, "down": 2}]}'
    ).encode()


def test_start_up_refuses_a_horizon_longer_than_raw_usage_retention(
    settings: Settings, committed_conn: psycopg.AsyncConnection
) -> None:
    env = {
        **os.environ,
        "FLOWBILL_DATABASE_URL": settings.database_dsn,
        "FLOWBILL_MQTT_PORT": str(settings.mqtt_port),
        "FLOWBILL_ENVIRONMENT": "test",
        "FLOWBILL_INGEST_CLIENT_ID": "abuse-horizon",
        "FLOWBILL_INGEST_METRICS_PORT": "0",
        "FLOWBILL_INGEST_MAX_AGE": "P400D",
        "FLOWBILL_USAGE_RETENTION_DAYS": "400",
    }
    started = time.monotonic()
    worker = subprocess.run(
        [sys.executable, "-m", "cli", "ingest"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode != 0
    assert "FLOWBILL_INGEST_MAX_AGE" in worker.stderr
    assert "FLOWBILL_USAGE_RETENTION_DAYS (400 days)" in worker.stderr
    assert "ingest worker started" not in worker.stdout + worker.stderr
    assert time.monotonic() - started < 60


def test_retention_refuses_to_drop_raw_usage_a_report_could_still_be_accepted_against(
    settings: Settings,
) -> None:
    iccid = new_iccid()
    day_old = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    with psycopg.connect(settings.database_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO usage_items (window_start, window_end, iccid, boot, seq, app,"
            " up_bytes, down_bytes, received_at) VALUES (%s, %s, %s, 1, 1, 'nav', 1, 2, now())",
            (day_old, day_old + timedelta(minutes=1), iccid),
        )
    env = {
        **os.environ,
        "FLOWBILL_DATABASE_URL": settings.database_dsn,
        "FLOWBILL_ENVIRONMENT": "test",
    }
    # 30 days of raw usage against the default 35-day horizon.
    refused = subprocess.run(
        [sys.executable, "-m", "cli", "retention", "--keep-days", "30"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "longer than the ingest horizon (35 days)" in refused.stderr
    assert _rows(settings, "SELECT count(*) FROM usage_items WHERE iccid = %s", iccid) == [(1,)]


def test_both_broker_configs_cap_packets_and_bytes_in_flight_and_drop_no_acknowledged_report(
    tmp_path: Path,
) -> None:
    from devstack.localstack import LocalStack
    from devstack.localstack.mosquitto import _write_mosquitto_conf

    _write_mosquitto_conf(LocalStack(root=tmp_path, pg_port=1, mqtt_port=2))
    for path in (
        tmp_path / "mosquitto" / "mosquitto.conf",
        REPO / "deploy/mosquitto/mosquitto.conf",
    ):
        lines = path.read_text().splitlines()
        # Just above the protocol's limit, with room for the topic and headers.
        assert "max_packet_size 69632" in lines, path
        assert MAX_PAYLOAD_BYTES + 1024 < 69632 < 2 * MAX_PAYLOAD_BYTES
        assert "max_inflight_bytes 16777216" in lines, path
        # Mosquitto enforces queue limits by dropping queued QoS 1 messages.
        assert "max_queued_bytes 0" in lines, path
        assert "max_queued_messages 0" in lines, path
