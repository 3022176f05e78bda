"""Tenants, API keys and roles, over HTTP."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from operator import itemgetter

import httpx
import psycopg
import pytest

from flowbill.settings import Settings
from tenants import service as tenants
from tenants.schemas import Role
from tests.conftest import (
    assert_bad_cursor,
    assert_each_once_in_order,
    assert_problem,
    bearer,
    make_tenant,
    walk_pages,
)


async def test_health_readiness_and_metrics(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = (await http.get("/readyz")).json()
    assert ready == {"status": "ready", "checks": {"database": True, "broker": True}}
    await http.get("/v1/me")
    metrics = (await http.get("/metrics")).text
    assert 'flowbill_http_requests_total{method="GET",route="/v1/me",status="401"}' in metrics
    assert "flowbill_http_request_duration_seconds_bucket" in metrics


async def test_openapi_documents_the_audiences(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert "/v1/operator/tenants" in spec["paths"]
    assert "/v1/me/keys" in spec["paths"]
    assert (await http.get("/docs")).status_code == 200


async def test_an_operator_creates_a_tenant_whose_key_is_shown_once(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    created = await http.post(
        "/v1/operator/tenants",
        json={"name": "Great Wall Motors", "role": "sponsor"},
        headers=bearer(operator_key),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]["api_key"]
    assert key.startswith("fbk_")
    me = await http.get("/v1/me", headers=bearer(key))
    assert me.json()["name"] == "Great Wall Motors"
    assert me.json()["role"] == "sponsor"
    listed = await http.get(
        f"/v1/operator/tenants/{body['tenant']['tenant_id']}/keys", headers=bearer(operator_key)
    )
    assert listed.json()["next_cursor"] is None
    assert [k["key_id"] for k in listed.json()["items"]] == [body["key"]["key_id"]]
    assert "api_key" not in listed.json()["items"][0]
    assert key not in listed.text


async def test_rotation_revocation_and_disabling(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _tenant_id, first = await make_tenant(settings, role=Role.MERCHANT)
    second = await http.post("/v1/me/keys", json={"label": "rotation"}, headers=bearer(first))
    assert second.status_code == 201
    second_key = second.json()["api_key"]
    first_id = first.split("_")[1]
    revoked = await http.delete(f"/v1/me/keys/{first_id}", headers=bearer(second_key))
    assert revoked.json()["revoked_at"] is not None
    assert_problem(await http.get("/v1/me", headers=bearer(first)), 401, "invalid-api-key")
    assert (await http.get("/v1/me", headers=bearer(second_key))).status_code == 200
    keys = (await http.get("/v1/me/keys", headers=bearer(second_key))).json()["items"]
    assert len(keys) == 2


async def test_a_disabled_tenant_cannot_call(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    tenant_id, key = await make_tenant(settings, role=Role.DRIVER)
    r = await http.post(f"/v1/operator/tenants/{tenant_id}/disable", headers=bearer(operator_key))
    assert r.json()["disabled"] is True
    assert_problem(await http.get("/v1/me", headers=bearer(key)), 401, "invalid-api-key")
    await http.post(f"/v1/operator/tenants/{tenant_id}/enable", headers=bearer(operator_key))
    assert (await http.get("/v1/me", headers=bearer(key))).status_code == 200


async def test_bad_credentials_all_get_the_same_clear_401(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    key_id = operator_key.split("_")[1]
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer("nonsense"),
        bearer("fbk_" + "a" * 16 + "_wrong"),
        bearer(f"fbk_{key_id}_wrong-secret"),
        bearer(f"fbk_{key_id}_" + "x" * 500),
        bearer("fbk_ABCDEFGHIJKLMNOP_secret"),
    ):
        r = await http.get("/v1/me", headers=headers)
        assert_problem(r, 401, "invalid-api-key")
        assert r.headers["www-authenticate"] == "Bearer"
        assert operator_key not in r.text


async def test_roles_are_enforced(http: httpx.AsyncClient, settings: Settings) -> None:
    for role in (Role.SPONSOR, Role.MERCHANT, Role.DRIVER):
        _, key = await make_tenant(settings, role=role)
        r = await http.get("/v1/operator/tenants", headers=bearer(key))
        assert_problem(r, 403, "role-not-allowed")


async def test_a_tenant_cannot_revoke_another_tenants_key(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, mine = await make_tenant(settings, role=Role.SPONSOR)
    _, theirs = await make_tenant(settings, role=Role.SPONSOR)
    their_id = theirs.split("_")[1]
    assert_problem(
        await http.delete(f"/v1/me/keys/{their_id}", headers=bearer(mine)), 404, "api-key-not-found"
    )
    assert (await http.get("/v1/me", headers=bearer(theirs))).status_code == 200


async def test_bad_input_gets_problem_details_and_changes_nothing(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    headers = bearer(operator_key)

    async def tenant_count() -> int:
        pages = await walk_pages(http, "/v1/operator/tenants", key=operator_key, limit=1000)
        return sum(len(page) for page in pages)

    before = await tenant_count()
    for body in (
        {"name": "", "role": "sponsor"},
        {"name": "x" * 201, "role": "sponsor"},
        {"name": "x", "role": "king"},
        {"name": "x"},
        {"name": "x", "role": "sponsor", "extra": 1},
        [],
    ):
        r = await http.post("/v1/operator/tenants", json=body, headers=headers)
        problem = assert_problem(r, 422, "invalid-input")
        assert problem["errors"]
    r = await http.post(
        "/v1/operator/tenants",
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    assert_problem(r, 422, "invalid-input")
    assert_problem(
        await http.get("/v1/operator/tenants/not-a-uuid", headers=headers), 422, "invalid-input"
    )
    assert_problem(
        await http.get(f"/v1/operator/tenants/{uuid.uuid4()}", headers=headers),
        404,
        "tenant-not-found",
    )
    assert_problem(
        await http.get("/v1/operator/tenants?limit=0", headers=headers), 422, "invalid-input"
    )
    assert_problem(
        await http.get("/v1/operator/tenants?role=king", headers=headers), 422, "invalid-input"
    )
    r = await http.get("/no/such/path")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await tenant_count() == before


@pytest.fixture
async def slow_commits(committed_conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """Every commit that revokes a key takes 300 ms more (a deferred trigger sleeps)."""
    await committed_conn.execute(
        """
        CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER test_slow_commit AFTER UPDATE ON api_keys
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
        """
    )
    try:
        yield
    finally:
        await committed_conn.execute(
            "DROP TRIGGER test_slow_commit ON api_keys; DROP FUNCTION test_slow_commit();"
        )


@pytest.mark.usefixtures("slow_commits")
async def test_a_command_is_committed_before_its_answer(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """A revoked key never works again, even on the very next request."""
    _, key = await make_tenant(settings, role=Role.SPONSOR)
    for _ in range(3):
        issued = await http.post("/v1/me/keys", json={"label": "short-lived"}, headers=bearer(key))
        new_key = issued.json()["api_key"]
        key_id = issued.json()["key_id"]
        await http.delete(f"/v1/me/keys/{key_id}", headers=bearer(key))
        assert (await http.get("/v1/me", headers=bearer(new_key))).status_code == 401


def test_verified_keys_expire_and_stay_bounded() -> None:
    now = [100.0]
    keys = tenants.VerifiedKeys(ttl_seconds=5, max_entries=3, clock=lambda: now[0])
    callers = [
        tenants.Caller(tenant_id=uuid.uuid4(), name=f"t{n}", role=Role.DRIVER, key_id=f"{n:016d}")
        for n in range(4)
    ]
    for n, caller in enumerate(callers[:3]):
        keys.put(bytes([n]), caller)
    assert keys.get(b"\x00") == callers[0]  # now the most recently used
    keys.put(b"\x03", callers[3])
    assert len(keys) == 3
    assert keys.get(b"\x01") is None  # the least recently used went
    now[0] += 4.9
    assert keys.get(b"\x00") == callers[0]
    now[0] += 0.1
    assert keys.get(b"\x00") is None
    keys.put(b"\x02", callers[2])
    keys.forget(tenant_id=callers[2].tenant_id, key_id="another key")
    assert keys.get(b"\x02") == callers[2]
    keys.forget(tenant_id=callers[2].tenant_id)
    assert keys.get(b"\x02") is None


@pytest.mark.parametrize("change", ["revoke the key", "disable the tenant"])
async def test_a_key_stopped_elsewhere_stops_working_within_the_cache_time(
    http: httpx.AsyncClient,
    settings: Settings,
    committed_conn: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """Another API process (or a script) revokes a key or disables its tenant: this process
    remembers the key as verified for KEY_CACHE_SECONDS at most, on every kind of endpoint."""
    tenant_id, key = await make_tenant(settings, role=Role.DRIVER)
    assert (await http.get("/v1/me", headers=bearer(key))).status_code == 200
    if change == "revoke the key":
        sql = "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s"
        await committed_conn.execute(sql, (key.split("_")[1],))
    else:
        sql = "UPDATE tenants SET disabled_at = now() WHERE tenant_id = %s"
        await committed_conn.execute(sql, (tenant_id,))
    remembered_at = time.monotonic()
    monkeypatch.setattr(tenants.VERIFIED_KEYS, "clock", lambda: remembered_at)
    assert (await http.get("/v1/me", headers=bearer(key))).status_code == 200
    later = remembered_at + tenants.KEY_CACHE_SECONDS
    monkeypatch.setattr(tenants.VERIFIED_KEYS, "clock", lambda: later)
    assert_problem(await http.get("/v1/me", headers=bearer(key)), 401, "invalid-api-key")
    redeem = await http.post(
        "/v1/wallet/exchange-orders",
        json={"item_id": str(uuid.uuid4())},
        headers={**bearer(key), "Idempotency-Key": "after-revocation"},
    )
    assert_problem(redeem, 401, "invalid-api-key")


async def test_last_used_at_is_written_at_most_once_a_minute(
    http: httpx.AsyncClient, settings: Settings, committed_conn: psycopg.AsyncConnection
) -> None:
    tenant_id, key = await make_tenant(settings, role=Role.DRIVER)
    key_id = key.split("_")[1]

    async def last_used() -> object:
        cur = await committed_conn.execute(
            "SELECT last_used_at FROM api_keys WHERE key_id = %s", (key_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        return row[0]

    async def call_unremembered() -> None:
        tenants.VERIFIED_KEYS.forget(tenant_id=uuid.UUID(tenant_id))
        assert (await http.get("/v1/me", headers=bearer(key))).status_code == 200

    assert await last_used() is None
    await call_unremembered()
    first = await last_used()
    assert first is not None
    await call_unremembered()
    for _ in range(5):
        assert (await http.get("/v1/me", headers=bearer(key))).status_code == 200
    assert await last_used() == first
    await committed_conn.execute(
        "UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE key_id = %s",
        (key_id,),
    )
    await call_unremembered()
    assert await last_used() > first  # type: ignore[operator]


async def test_tenants_and_their_keys_page_in_the_order_they_were_made(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    made = [(await make_tenant(settings, role=Role.APP))[0] for _ in range(5)]
    pages = await walk_pages(
        http, "/v1/operator/tenants", key=operator_key, limit=2, params={"role": "app"}
    )
    assert {t["role"] for page in pages for t in page} == {"app"}
    assert_each_once_in_order(pages, key=itemgetter("tenant_id"), expected=made)

    tenant_id, key = await make_tenant(settings, role=Role.SPONSOR)
    key_ids = [key.split("_")[1]]
    for n in range(4):
        issued = await http.post("/v1/me/keys", json={"label": f"k{n}"}, headers=bearer(key))
        key_ids.append(issued.json()["key_id"])
    for path, caller in (
        ("/v1/me/keys", key),
        (f"/v1/operator/tenants/{tenant_id}/keys", operator_key),
    ):
        pages = await walk_pages(http, path, key=caller, limit=2)
        assert [len(page) for page in pages] == [2, 2, 1]
        assert_each_once_in_order(pages, key=itemgetter("key_id"), expected=key_ids)


async def test_a_cursor_that_is_not_the_lists_own_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    tenant_id, key = await make_tenant(settings, role=Role.SPONSOR)
    await http.post("/v1/me/keys", json={"label": "second"}, headers=bearer(key))
    first = await http.get("/v1/me/keys", params={"limit": 1}, headers=bearer(key))
    keys_cursor = first.json()["next_cursor"]
    assert keys_cursor
    forged = base64.urlsafe_b64encode(b'["tenants","yesterday","x"]').decode().rstrip("=")
    for path, caller, cursor in (
        ("/v1/operator/tenants", operator_key, "not-a-cursor"),
        ("/v1/operator/tenants", operator_key, keys_cursor),
        ("/v1/operator/tenants", operator_key, forged),
        (f"/v1/operator/tenants/{tenant_id}/keys", operator_key, "%%%"),
        ("/v1/me/keys", key, keys_cursor[:-2]),
    ):
        answer = await http.get(path, params={"cursor": cursor}, headers=bearer(caller))
        assert_bad_cursor(answer)
    assert_problem(
        await http.get("/v1/me/keys", params={"cursor": "x" * 601}, headers=bearer(key)),
        422, "invalid-input",
    )  # fmt: skip
