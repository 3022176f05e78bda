"""The operator's view of metering, over HTTP, on data the ingest workers stored."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from flowbill.settings import Settings
from tests.conftest import IngestProcess, assert_problem, bearer, new_iccid, wait_for
from tests.ingest.test_end_to_end import publish, report, report_count


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

    unprovisioned = (
        await http.get("/v1/operator/sims/unprovisioned?limit=1000", headers=headers)
    ).json()
    assert iccid in {s["iccid"] for s in unprovisioned}
    r = await http.post("/v1/operator/sims", json={"iccids": [iccid, iccid]}, headers=headers)
    assert r.json() == {"requested": 1, "newly_provisioned": 1}
    unprovisioned = (
        await http.get("/v1/operator/sims/unprovisioned?limit=1000", headers=headers)
    ).json()
    assert iccid not in {s["iccid"] for s in unprovisioned}

    gaps = (await http.get(f"/v1/operator/ingest/gaps/{iccid}/1", headers=headers)).json()
    assert gaps["missing"] == [{"first_seq": 3, "last_seq": 5}]

    async def rejected() -> bool:
        page = (
            await http.get(
                "/v1/operator/ingest/rejects?reason=not_json&limit=1000", headers=headers
            )
        ).json()
        return any(r["topic"] == topic for r in page["rejects"])

    await wait_for(rejected)
    page = (
        await http.get("/v1/operator/ingest/rejects?reason=not_json&limit=1000", headers=headers)
    ).json()
    mine = next(r for r in page["rejects"] if r["topic"] == topic)
    assert base64.b64decode(mine["payload_base64"]) == b"definitely not json"
    summary = (await http.get("/v1/operator/ingest/rejects/summary", headers=headers)).json()
    assert summary["not_json"] >= 1

    now = datetime.now(UTC)
    hourly = await http.get(
        f"/v1/operator/sims/{iccid}/usage/hourly",
        params={"since": (now - timedelta(days=2)).isoformat(), "until": now.isoformat()},
        headers=headers,
    )
    rows = hourly.json()
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
