"""Request limits: a body over its route's limit, a flood on one API key, a stream of bad keys
and a statement that runs too long are each refused with a problem answer, before (or instead
of) any work, and change nothing (docs/security.md, "Requests that cost too much")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api.app import create_app
from flowbill import db
from flowbill.settings import MIB, Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant, serving
from tests.iot_cards.factories import block_prefix, new_card

pytestmark = pytest.mark.timeout(180)


@contextlib.asynccontextmanager
async def own_api(settings: Settings, **overrides: Any) -> AsyncIterator[tuple[str, FastAPI]]:
    """An API of its own (its own pool, limiter and settings), served over HTTP."""
    app = create_app(settings.model_copy(update=overrides))
    async with serving(app) as url:
        yield url, app


def connection_requests(app: FastAPI) -> int:
    """How many connections the app's pool has handed out (or been asked for)."""
    stats: dict[str, int] = app.state.pool.get_stats()
    return stats.get("requests_num", 0)


async def count(conn: psycopg.AsyncConnection[Any], sql: str, *params: object) -> int:
    row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return int(row[0])


def csv_of(cards: list[tuple[str, str, str]]) -> bytes:
    return ("iccid,imsi,msisdn\n" + "".join(f"{a},{b},{c}\n" for a, b, c in cards)).encode()


async def in_chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked transfer encoding)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed_and_changes_nothing(
    http: httpx.AsyncClient,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection[Any],
) -> None:
    tenants_before = await count(committed_conn, "SELECT count(*) FROM tenants")
    name = "big " + secrets.token_hex(4)
    body = json.dumps({"name": name + "x" * MIB, "role": "driver"}).encode()
    headers = {**bearer(operator_key), "Content-Type": "application/json"}

    # Declared too long: answered from the headers.
    declared = await http.post("/v1/operator/tenants", content=body, headers=headers)
    problem = assert_problem(declared, 413, "body-too-large")
    assert problem["max_bytes"] == MIB
    # Chunked, no length declared: stopped by the running count.
    streamed = await http.post("/v1/operator/tenants", content=in_chunks(body), headers=headers)
    assert_problem(streamed, 413, "body-too-large")

    assert await count(committed_conn, "SELECT count(*) FROM tenants") == tenants_before
    assert (
        await count(committed_conn, "SELECT count(*) FROM tenants WHERE name LIKE %s", name + "%")
        == 0
    )
    # The API goes on serving.
    assert (await http.get("/v1/me", headers=bearer(operator_key))).status_code == 200


async def test_a_card_import_takes_a_larger_body_read_as_a_stream_and_no_more(
    settings: Settings,
    http: httpx.AsyncClient,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection[Any],
) -> None:
    # Over the default 1 MiB, under the import's 10 MiB: read and judged (here, bad rows).
    bad_rows = b"iccid,imsi,msisdn\n" + b"1,2,3\n" * (MIB // 6 + 1000)
    params = {"carrier": "cmcc-iot", "label": "limits"}
    headers = {**bearer(operator_key), "Content-Type": "text/csv"}
    judged = await http.post(
        "/v1/operator/iot/card-imports", params=params, content=in_chunks(bad_rows),
        headers=headers,
    )  # fmt: skip
    assert_problem(judged, 422, "card-import-rejected")

    # An API whose imports take 64 KiB: a good batch of 2,000 cards (~70 KiB) is refused
    # whole, streamed or declared, and none of its cards exists afterwards.
    prefix = block_prefix()
    cards = [new_card(prefix, serial) for serial in range(2000)]
    batch = csv_of(cards)
    assert len(batch) > 64 * 1024
    batches_before = await count(committed_conn, "SELECT count(*) FROM iot_import_batches")
    own = own_api(settings, request_import_body_max_bytes=64 * 1024)
    async with own as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        for content in (in_chunks(batch), batch):
            refused = await client.post(
                    "/v1/operator/iot/card-imports", params=params, content=content,
                    headers=headers,
                )  # fmt: skip
            assert_problem(refused, 413, "body-too-large")
        assert (
            await count(committed_conn, "SELECT count(*) FROM iot_import_batches") == batches_before
        )
        assert (
            await count(
                committed_conn,
                "SELECT count(*) FROM iot_cards WHERE iccid = ANY(%s)",
                [iccid for iccid, _, _ in cards],
            )
            == 0
        )
        # The same cards in a batch under the limit are good ones.
        accepted = await client.post(
                "/v1/operator/iot/card-imports", params=params,
                content=in_chunks(csv_of(cards[:500])),
                headers=headers,
            )  # fmt: skip
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["cards"] == 500


async def test_a_burst_on_one_driver_key_is_limited_and_another_driver_goes_on(
    settings: Settings,
    http: httpx.AsyncClient,
    committed_conn: psycopg.AsyncConnection[Any],
) -> None:
    flooder_id, flooder = await make_tenant(settings, role=Role.DRIVER)
    other_id, other = await make_tenant(settings, role=Role.DRIVER)
    links = "SELECT count(*) FROM web_sign_in_links WHERE tenant_id = %s"
    other_links_before = await count(committed_conn, links, other_id)

    # 3,000 sign-in links asked for at once on one key (each success makes one row), while the
    # other driver makes its own requests alongside.
    gate = asyncio.Semaphore(64)

    async def flood() -> httpx.Response:
        async with gate:
            return await http.post("/v1/me/sign-in-links", headers=bearer(flooder))

    async def other_driver() -> list[httpx.Response]:
        answers = []
        for _ in range(40):
            answers.append(await http.get("/v1/wallet", headers=bearer(other)))
            await asyncio.sleep(0.01)
        return answers

    started = time.monotonic()
    flood_task = asyncio.gather(*(flood() for _ in range(3000)))
    others = await other_driver()
    answers = await flood_task
    elapsed = time.monotonic() - started

    made = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code == 429]
    assert len(made) + len(refused) == 3000, {a.status_code for a in answers}
    limit = settings.rate_limit_driver
    # The bucket's bound: its burst, and what it refilled while the flood lasted.
    assert limit.burst <= len(made) <= limit.burst + limit.per_second * elapsed + 1, len(made)
    assert refused
    problem = assert_problem(refused[0], 429, "rate-limited")
    assert int(refused[0].headers["Retry-After"]) >= 1
    assert problem["retry_after_seconds"] == int(refused[0].headers["Retry-After"])
    # The refused requests made nothing: one link per success.
    assert await count(committed_conn, links, flooder_id) == len(made)

    # The other driver was served throughout, and nothing of its changed.
    assert [a.status_code for a in others] == [200] * len(others)
    assert await count(committed_conn, links, other_id) == other_links_before
    assert (await http.post("/v1/me/sign-in-links", headers=bearer(other))).status_code == 201


async def test_a_malformed_or_lately_refused_key_takes_no_database_connection(
    settings: Settings, committed_conn: psycopg.AsyncConnection[Any]
) -> None:
    _, good = await make_tenant(settings, role=Role.DRIVER)
    unknown = "fbk_" + "a" * 16 + "_" + secrets.token_urlsafe(32)
    keys_before = await count(committed_conn, "SELECT count(*) FROM api_keys")
    async with own_api(settings) as (url, app), httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v1/wallet", headers=bearer(good))).status_code == 200
        taken = connection_requests(app)

        for malformed in ("not-a-key", "fbk_short_x", "fbk_" + "!" * 16 + "_secret", "Basic"):
            answer = await client.get("/v1/wallet", headers=bearer(malformed))
            assert_problem(answer, 401, "invalid-api-key")
        assert_problem(await client.get("/v1/wallet"), 401, "invalid-api-key")
        assert connection_requests(app) == taken

        # An unknown key is looked up once; its repeats are refused from memory.
        first = await client.post("/v1/me/keys", json={"label": "x"}, headers=bearer(unknown))
        assert_problem(first, 401, "invalid-api-key")
        assert connection_requests(app) == taken + 1
        for _ in range(50):
            again = await client.post("/v1/me/keys", json={"label": "x"}, headers=bearer(unknown))
            assert_problem(again, 401, "invalid-api-key")
        assert connection_requests(app) == taken + 1

        # Meanwhile a good key still works, and nothing was created.
        assert (await client.get("/v1/wallet", headers=bearer(good))).status_code == 200
    assert await count(committed_conn, "SELECT count(*) FROM api_keys") == keys_before


async def test_a_slow_statement_is_cancelled_with_a_clean_problem_and_changes_nothing(
    settings: Settings, committed_conn: psycopg.AsyncConnection[Any]
) -> None:
    tenant_id, key = await make_tenant(settings, role=Role.DRIVER)
    keys = "SELECT count(*) FROM api_keys WHERE tenant_id = %s"
    own = own_api(settings, api_statement_timeout_seconds=0.5)
    async with own as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200
        # Another session holds the tenant's row: issuing a key (its foreign key check)
        # waits for it past the API's statement_timeout.
        holder = await psycopg.AsyncConnection.connect(settings.database_dsn)
        try:
            await holder.execute(
                "SELECT 1 FROM tenants WHERE tenant_id = %s FOR UPDATE", (tenant_id,)
            )
            waited = await client.post("/v1/me/keys", json={"label": "slow"}, headers=bearer(key))
        finally:
            await holder.rollback()
            await holder.close()
        assert_problem(waited, 503, "statement-timeout")
        assert waited.headers["Retry-After"] == "1"
        assert await count(committed_conn, keys, tenant_id) == 1
        # The connection went back clean: the same command now succeeds.
        issued = await client.post("/v1/me/keys", json={"label": "fast"}, headers=bearer(key))
        assert issued.status_code == 201, issued.text
    assert await count(committed_conn, keys, tenant_id) == 2


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("flowbill-api", "api_statement_timeout_seconds"),
        ("flowbill-ingest-host", "ingest_statement_timeout_seconds"),
        ("flowbill-compaction", "ingest_statement_timeout_seconds"),
        ("flowbill-billing", "billing_statement_timeout_seconds"),
        ("flowbill-webhooks", "webhooks_statement_timeout_seconds"),
        ("flowbill-ledger", "billing_statement_timeout_seconds"),
    ],
)
async def test_every_connection_carries_its_components_statement_timeout(
    settings: Settings, name: str, setting: str
) -> None:
    expected_ms = str(round(getattr(settings, setting) * 1000))
    assert expected_ms != "0"
    shown = "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"  # milliseconds
    conn = await db.connect(settings, application_name=name)
    try:
        row = await (await conn.execute(shown)).fetchone()
    finally:
        await conn.close()
    assert row == (expected_ms,)
    pool = db.create_pool(settings, name=name)
    await pool.open(wait=True)
    try:
        async with pool.connection() as pooled:
            row = await (await pooled.execute(shown)).fetchone()
    finally:
        await pool.close()
    assert row == (expected_ms,)
