"""Reports over a real Mosquitto into real ingest workers and TimescaleDB."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from devices.ca import DeviceCa
from flowbill.settings import Settings
from ingest import mqtt_session
from ingest.protocol import AppUsage, UsageReport, encode_report
from tests.conftest import REPO, IngestProcess, new_iccid, wait_for

EXAMPLES = REPO / "docs" / "examples"


def report(iccid: str, seq: int, apps: dict[str, tuple[int, int]], *, boot: int = 1) -> bytes:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=24)
    start += timedelta(minutes=seq)
    return encode_report(
        UsageReport(
            iccid=iccid,
            boot=boot,
            seq=seq,
            start=start,
            end=start + timedelta(minutes=1),
            apps=[AppUsage(a, u, d) for a, (u, d) in apps.items()],
        )
    )


async def publish(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    async with mqtt_session.broker_client(settings) as client:
        client.pending_calls_threshold = 100_000
        await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in messages))


async def stored(conn: psycopg.AsyncConnection, iccid: str) -> dict[str, tuple[int, int]]:
    cur = await conn.execute(
        "SELECT app, sum(up_bytes), sum(down_bytes) FROM usage_items WHERE iccid = %s GROUP BY app",
        (iccid,),
    )
    return {app: (int(u), int(d)) for app, u, d in await cur.fetchall()}


async def report_count(conn: psycopg.AsyncConnection, iccid: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM usage_reports WHERE iccid = %s", (iccid,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_the_documented_example_sent_with_mosquitto_pub_lands_exactly(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
    tmp_path: Path,
) -> None:
    example = EXAMPLES / "usage-report.json"
    body = json.loads(example.read_text())
    # As docs/protocol.md shows it: over TLS, with the device's own certificate.
    assert settings.device_ca_dir is not None
    assert settings.device_ca_file is not None
    issued = DeviceCa.load(settings.device_ca_dir).issue_with_new_key(
        body["iccid"], now=datetime.now(UTC), days=1
    )
    assert issued.private_key_pem is not None
    (tmp_path / "device.pem").write_text(issued.certificate_pem)
    (tmp_path / "device.key").write_text(issued.private_key_pem)
    sent = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "localhost", "-p", str(settings.mqtt_tls_port), "-q", "1",
        "--cafile", settings.device_ca_file, "--cert", str(tmp_path / "device.pem"),
        "--key", str(tmp_path / "device.key"),
        "-t", f"flowbill/v1/sims/{body['iccid']}/usage", "-f", str(example),
    )  # fmt: skip
    assert await sent.wait() == 0

    async def landed() -> bool:
        return await report_count(committed_conn, body["iccid"]) == 1

    await wait_for(landed)
    expected = {a["app"]: (a["up"], a["down"]) for a in body["apps"]}
    assert await stored(committed_conn, body["iccid"]) == expected
    cur = await committed_conn.execute(
        "SELECT app, sum(up_bytes), sum(down_bytes) FROM usage_hourly WHERE iccid = %s"
        " GROUP BY app",
        (body["iccid"],),
    )
    assert {a: (int(u), int(d)) for a, u, d in await cur.fetchall()} == expected


async def test_copies_received_by_both_workers_at_once_are_stored_once(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
) -> None:
    iccids = [new_iccid() for _ in range(20)]
    messages = []
    for iccid in iccids:
        payload = report(iccid, 1, {"nav.amap": (1000, 2000), "music.qq": (5, 1_048_576)})
        # Ten copies of each report: the shared subscription spreads them over both workers.
        messages += [(f"flowbill/v1/sims/{iccid}/usage", payload)] * 10
    duplicates_before = sum(
        w.metric("flowbill_ingest_reports_duplicate_total") for w in ingest_workers
    )
    await publish(settings, messages)

    async def all_landed() -> bool:
        duplicates = sum(
            w.metric("flowbill_ingest_reports_duplicate_total") for w in ingest_workers
        )
        return duplicates - duplicates_before >= 180

    await wait_for(all_landed)
    for iccid in iccids:
        assert await report_count(committed_conn, iccid) == 1
        assert await stored(committed_conn, iccid) == {
            "nav.amap": (1000, 2000),
            "music.qq": (5, 1_048_576),
        }
    received = [w.metric("flowbill_ingest_messages_received_total") for w in ingest_workers]
    assert all(r > 0 for r in received), "both workers take part in the shared subscription"


async def test_every_bad_input_class_is_rejected_with_its_reason_and_ingest_goes_on(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
) -> None:
    iccid = new_iccid()
    other = new_iccid()
    topic = f"flowbill/v1/sims/{iccid}/usage"
    good = json.loads(report(iccid, 1, {"telematics": (1, 2)}))
    now = datetime.now(UTC)

    def variant(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    bad: list[tuple[str, bytes, str]] = [
        (topic, b"\xc3\x28 not utf-8", "not_utf8"),
        (topic, b"{oops", "not_json"),
        (topic, variant(boot="1"), "invalid_field"),
        (topic, variant(apps=[{"app": "x", "up": -5, "down": 0}]), "invalid_field"),
        (topic, variant(iccid=iccid[:-1] + str((int(iccid[-1]) + 1) % 10)), "bad_iccid"),
        (topic, variant(iccid=other), "iccid_mismatch"),
        (topic, variant(end=good["start"]), "bad_window"),
        (
            topic,
            variant(
                start=(now + timedelta(hours=1)).isoformat(),
                end=(now + timedelta(hours=1, minutes=1)).isoformat(),
            ),
            "bad_window",
        ),
        (topic, variant(apps=[{"app": "has space", "up": 1, "down": 1}]), "bad_app"),
        (
            topic,
            variant(apps=[{"app": "a", "up": 1, "down": 1}, {"app": "a", "up": 1, "down": 1}]),
            "duplicate_app",
        ),
        (
            topic,
            variant(
                start=(now - timedelta(days=40)).isoformat(),
                end=(now - timedelta(days=40) + timedelta(minutes=1)).isoformat(),
            ),
            "too_old",
        ),
        # A little over the protocol's 64 KiB: the broker still passes it on, to be kept.
        (topic, b"{" + b" " * 66_000 + b"}", "too_large"),
        ("flowbill/v1/sims/not-an-iccid/usage", variant(), "bad_topic"),
    ]
    # Bad and good interleaved: the good ones must not wait behind the bad.
    messages: list[tuple[str, bytes]] = []
    for seq, (t, payload, _) in enumerate(bad, start=2):
        messages.append((t, payload))
        messages.append((topic, report(iccid, seq, {"telematics": (seq, seq)})))
    await publish(settings, messages)

    async def all_in() -> bool:
        cur = await committed_conn.execute(
            "SELECT count(*) FROM ingest_rejects WHERE topic = ANY(%s)",
            ([topic, "flowbill/v1/sims/not-an-iccid/usage"],),
        )
        row = await cur.fetchone()
        return bool(row and row[0] >= len(bad)) and await report_count(
            committed_conn, iccid
        ) == len(bad)

    await wait_for(all_in)
    cur = await committed_conn.execute(
        "SELECT reason, payload FROM ingest_rejects WHERE topic = %s ORDER BY reject_id", (topic,)
    )
    rows = await cur.fetchall()
    assert sorted(r for r, _ in rows) == sorted(reason for t, _, reason in bad if t == topic)
    assert {bytes(p) for _, p in rows if _ != "too_large"} == {
        p for t, p, r in bad if t == topic and r != "too_large"
    }
    cur = await committed_conn.execute(
        "SELECT reason FROM ingest_rejects WHERE topic = 'flowbill/v1/sims/not-an-iccid/usage'"
    )
    assert {r for (r,) in await cur.fetchall()} == {"bad_topic"}
    assert await stored(committed_conn, iccid) == {
        "telematics": (sum(range(2, len(bad) + 2)), sum(range(2, len(bad) + 2)))
    }


def test_the_schema_file_and_examples_agree(tmp_path: Path) -> None:
    import jsonschema

    from ingest.protocol import Rejection, parse_report

    schema = json.loads((REPO / "docs" / "usage-report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )

    for example in sorted(EXAMPLES.glob("*.json")):
        body = example.read_bytes()
        iccid = json.loads(body).get("iccid", "89860012345678901238")
        result = parse_report(
            f"flowbill/v1/sims/{iccid}/usage",
            body,
            now=datetime.now(UTC),
            max_clock_skew=timedelta(minutes=5),
        )
        if example.name.startswith("invalid-"):
            assert isinstance(result, Rejection), example.name
        else:
            assert not isinstance(result, Rejection), (example.name, result)
            validator.validate(json.loads(body))
    negative = json.loads((EXAMPLES / "invalid-negative-bytes.json").read_text())
    assert not validator.is_valid(negative)


async def test_workers_compact_rollups_of_closed_hours_without_changing_sums(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
) -> None:
    iccid = new_iccid()
    topic = f"flowbill/v1/sims/{iccid}/usage"
    for seq in range(1, 5):  # one publish each: separate batches, separate rollup rows
        await publish(settings, [(topic, report(iccid, seq, {"music.qq": (seq, 10 * seq)}))])

        async def stored_seq(expected: int = seq) -> bool:
            return await report_count(committed_conn, iccid) == expected

        await wait_for(stored_seq)

    async def compacted() -> bool:
        cur = await committed_conn.execute(
            "SELECT count(*) - count(DISTINCT hour), sum(up_bytes), sum(down_bytes), sum(items)"
            " FROM usage_hourly WHERE iccid = %s",
            (iccid,),
        )
        row = await cur.fetchone()
        assert row is not None
        assert tuple(int(v) for v in row[1:]) == (10, 100, 4)  # sums hold at every moment
        return int(row[0]) == 0  # one row per hour left

    await wait_for(compacted, timeout=30)


async def test_a_message_the_database_refuses_is_isolated_and_the_rest_of_its_batch_stored(
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
) -> None:
    # A rule the protocol does not know: the database refuses one app id.
    await committed_conn.execute(
        "ALTER TABLE usage_items ADD CONSTRAINT test_refuse_poison"
        " CHECK (app <> 'poison.app') NOT VALID"
    )
    try:
        iccid = new_iccid()
        topic = f"flowbill/v1/sims/{iccid}/usage"
        messages = [(topic, report(iccid, seq, {"telematics": (seq, seq)})) for seq in range(1, 40)]
        messages.insert(20, (topic, report(iccid, 99, {"poison.app": (1, 1)})))
        await publish(settings, messages)

        async def settled() -> bool:
            cur = await committed_conn.execute(
                "SELECT count(*) FROM ingest_rejects WHERE topic = %s AND reason = 'unstorable'",
                (topic,),
            )
            row = await cur.fetchone()
            return bool(row and row[0] == 1) and await report_count(committed_conn, iccid) == 39

        await wait_for(settled)
        assert await stored(committed_conn, iccid) == {"telematics": (780, 780)}
    finally:
        await committed_conn.execute("ALTER TABLE usage_items DROP CONSTRAINT test_refuse_poison")
