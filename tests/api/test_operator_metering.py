"""The operator's view of metering, over HTTP, on data the ingest workers stored."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from operator import itemgetter

import httpx
import psycopg

from flowbill import db
from flowbill.settings import Settings
from ingest.service import ReceivedMessage, store_batch
from tests.conftest import (
    IngestProcess,
    assert_bad_cursor,
    assert_each_once_in_order,
    assert_problem,
    bearer,
    new_iccid,
    wait_for,
    walk_pages,
)
from tests.ingest.test_end_to_end import publish, report, report_count
from tests.ingest.test_store import SKEW, T0, report_message


async def test_provisioning_gaps_rejects_and_hourly_usage(
    http: httpx.AsyncClient,
    operator_key: str,
    settings: Settings,
    ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection,
) -> None:
    headers = bearer(operator_key)
    iccid = new_iccid()
    topic = f"flowbill/v1/sims/{iccid}/usage"
    await publish(
        settings,
        [(topic, report(iccid, seq, {"nav.amap": (100, 200)})) for seq in (1, 2, 6)]
        + [(topic, b"definitely not json")],
    )

    async def landed() -> bool:
        return await report_count(committed_conn, iccid) == 3

    await wait_for(landed)

    async def unprovisioned() -> set[str]:
        path = "/v1/operator/sims/unprovisioned"
        pages = await walk_pages(http, path, key=operator_key, limit=1000)
        return {str(s["iccid"]) for page in pages for s in page}

    assert iccid in await unprovisioned()
    r = await http.post("/v1/operator/sims", json={"iccids": [iccid, iccid]}, headers=headers)
    assert r.json() == {"requested": 1, "newly_provisioned": 1, "device_credentials": []}
    assert iccid not in await unprovisioned()

    gaps = (await http.get(f"/v1/operator/ingest/gaps/{iccid}/1", headers=headers)).json()
    assert gaps["missing"] == [{"first_seq": 3, "last_seq": 5}]

    async def rejected() -> bool:
        page = (
            await http.get(
                "/v1/operator/ingest/rejects?reason=not_json&limit=1000", headers=headers
            )
        ).json()
        return any(r["topic"] == topic for r in page["items"])

    await wait_for(rejected)
    page = (
        await http.get("/v1/operator/ingest/rejects?reason=not_json&limit=1000", headers=headers)
    ).json()
    mine = next(r for r in page["items"] if r["topic"] == topic)
    assert base64.b64decode(mine["payload_base64"]) == b"definitely not json"
    summary = (await http.get("/v1/operator/ingest/rejects/summary", headers=headers)).json()
    assert summary["not_json"] >= 1

    now = datetime.now(UTC)
    hourly = await http.get(
        f"/v1/operator/sims/{iccid}/usage/hourly",
        params={"since": (now - timedelta(days=2)).isoformat(), "until": now.isoformat()},
        headers=headers,
    )
    rows = hourly.json()["items"]
    assert sum(r["up_bytes"] for r in rows) == 300
    assert sum(r["down_bytes"] for r in rows) == 600


async def test_metering_endpoints_reject_bad_ids_and_parameters(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    headers = bearer(operator_key)
    assert_problem(
        await http.post(
            "/v1/operator/sims", json={"iccids": ["89860012345678901239"]}, headers=headers
        ),
        422, "invalid-input",
    )  # fmt: skip
    assert_problem(
        await http.post("/v1/operator/sims", json={"iccids": []}, headers=headers),
        422,
        "invalid-input",
    )
    assert_problem(
        await http.get("/v1/operator/ingest/gaps/123/1", headers=headers), 422, "invalid-input"
    )
    assert_problem(
        await http.get("/v1/operator/ingest/gaps/89860012345678901238/-1", headers=headers),
        422, "invalid-input",
    )  # fmt: skip
    assert_problem(
        await http.get("/v1/operator/ingest/rejects?reason=bogus", headers=headers),
        422,
        "invalid-input",
    )
    assert_problem(
        await http.get(
            "/v1/operator/sims/89860012345678901238/usage/hourly",
            params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            headers=headers,
        ),
        422, "invalid-input",
    )  # fmt: skip


async def stored(settings: Settings, messages: list[ReceivedMessage]) -> None:
    """Store messages as a committed ingest batch, as a worker would."""
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            await store_batch(conn, messages, max_clock_skew=SKEW)
    finally:
        await conn.close()


async def test_the_metering_lists_page(
    http: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    gappy = sorted(new_iccid() for _ in range(3))
    apps = {"nav.amap": (1, 2), "music.qq": (3, 4)}
    hourly = gappy[0]
    rejected = [f"flowbill/v1/sims/{new_iccid()}/usage" for _ in range(3)]
    await stored(
        settings,
        [report_message(i, seq=s, minute=s, apps=apps) for i in gappy for s in (1, 3)]
        + [report_message(gappy[0], boot=2, seq=s, minute=s, apps=apps) for s in (1, 4)]
        + [report_message(hourly, boot=3, seq=s, minute=60 * s, apps=apps) for s in (1, 2)]
        + [ReceivedMessage(topic, b"not json", datetime.now(UTC)) for topic in rejected],
    )
    # All arrived in one batch, so were last seen at once: newest first, then ICCID down.
    pages = await walk_pages(http, "/v1/operator/sims/unprovisioned", key=operator_key, limit=2)
    assert_each_once_in_order(pages, key=itemgetter("iccid"), expected=gappy[::-1])
    pages = await walk_pages(http, "/v1/operator/ingest/gaps", key=operator_key, limit=2)
    assert_each_once_in_order(
        pages, key=itemgetter("iccid", "boot"),
        expected=[(gappy[2], 1), (gappy[1], 1), (gappy[0], 2), (gappy[0], 1)],
    )  # fmt: skip
    pages = await walk_pages(
        http, "/v1/operator/ingest/rejects", key=operator_key, limit=2,
        params={"reason": "not_json"},
    )  # fmt: skip
    assert_each_once_in_order(pages, key=itemgetter("topic"), expected=rejected[::-1])
    pages = await walk_pages(
        http, f"/v1/operator/sims/{hourly}/usage/hourly", key=operator_key, limit=3,
        params={"since": T0.isoformat(), "until": (T0 + timedelta(hours=3)).isoformat()},
    )  # fmt: skip
    expected = [(T0 + timedelta(hours=h), app) for h in range(3) for app in sorted(apps)]
    listed = [(datetime.fromisoformat(str(r["hour"])), r["app"]) for page in pages for r in page]
    assert listed == expected
    assert [len(page) for page in pages] == [3, 3]


async def test_the_metering_lists_refuse_foreign_cursors(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    first = await http.get(
        "/v1/operator/ingest/rejects", params={"limit": 1}, headers=bearer(operator_key)
    )
    rejects_cursor = first.json()["next_cursor"] or "no-rejects-yet"
    window = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=1)).isoformat()}
    for path, params in (
        ("/v1/operator/sims/unprovisioned", {"cursor": rejects_cursor}),
        ("/v1/operator/ingest/gaps", {"cursor": rejects_cursor}),
        ("/v1/operator/ingest/rejects", {"cursor": "bm90IGEgY3Vyc29y"}),
        ("/v1/operator/sims/89860012345678901238/usage/hourly", {**window, "cursor": "x"}),
    ):
        assert_bad_cursor(await http.get(path, params=params, headers=bearer(operator_key)))
