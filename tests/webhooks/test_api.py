"""The webhooks API over HTTP: endpoints, secrets, messages, the delivery log, replay, tests;
tenant isolation and the problems bad input gets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from operator import itemgetter

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from flowbill import db
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import (
    assert_bad_cursor,
    assert_each_once_in_order,
    assert_problem,
    bearer,
    make_tenant,
    walk_pages,
)
from tests.webhooks.conftest import SCHEDULE, TIMEOUT, Receiver, Reply, emit, msg_id_of, rows
from webhooks import delivery, signing
from webhooks.schemas import EVENT_TYPES

pytestmark = pytest.mark.usefixtures("own_queue")

Pool = AsyncConnectionPool[db.Connection]
NOTHING = {"items": [], "next_cursor": None}


async def tenant_key(
    settings: Settings, role: Role = Role.SPONSOR
) -> tuple[uuid.UUID, dict[str, str]]:
    tenant_id, key = await make_tenant(settings, role=role)
    return uuid.UUID(tenant_id), bearer(key)


async def create(
    http: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> dict[str, object]:
    made = await http.post("/v1/webhooks/endpoints", json=body, headers=headers)
    assert made.status_code == 201, made.text
    created: dict[str, object] = made.json()
    return created


async def deliver(pool: Pool, *, at: float = 0) -> int:
    async with httpx.AsyncClient() as client:
        return await delivery.deliver_due(
            pool, client, now=datetime.now(UTC) + timedelta(seconds=at), limit=100,
            timeout_seconds=TIMEOUT, schedule=SCHEDULE,
        )  # fmt: skip


async def test_endpoints_are_created_listed_changed_and_deleted(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, sponsor = await tenant_key(settings)
    made = await create(
        http, sponsor, url="https://hooks.example.com/flowbill", description="alerts",
        event_types=["policy.cap_threshold_reached"],
    )  # fmt: skip
    secret = str(made["secret"])
    assert secret.startswith("whsec_")
    signing.secret_key(secret)
    path = f"/v1/webhooks/endpoints/{made['endpoint_id']}"
    shown = (await http.get(path, headers=sponsor)).json()
    assert "secret" not in shown
    assert shown["event_types"] == ["policy.cap_threshold_reached"]
    assert shown["enabled"] is True
    assert shown["previous_secret_until"] is None
    listed = (await http.get("/v1/webhooks/endpoints", headers=sponsor)).json()["items"]
    assert [e["endpoint_id"] for e in listed] == [made["endpoint_id"]]
    changed = await http.patch(
        path, json={"enabled": False, "event_types": [], "url": "https://b.example.com/h"},
        headers=sponsor,
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled"] is False
    assert changed.json()["event_types"] == []
    assert changed.json()["url"] == "https://b.example.com/h"
    assert changed.json()["description"] == "alerts"
    deleted = await http.delete(path, headers=sponsor)
    assert deleted.status_code == 204
    assert_problem(await http.get(path, headers=sponsor), 404, "webhook-endpoint-not-found")
    assert_problem(await http.delete(path, headers=sponsor), 404, "webhook-endpoint-not-found")
    assert (await http.get("/v1/webhooks/endpoints", headers=sponsor)).json() == NOTHING


async def test_rotating_a_secret_shows_the_new_one_once(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, merchant = await tenant_key(settings, Role.MERCHANT)
    made = await create(http, merchant, url="https://iot.example.com/hook")
    path = f"/v1/webhooks/endpoints/{made['endpoint_id']}"
    rotated = await http.post(f"{path}/secret/rotate", headers=merchant)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] != made["secret"]
    until = datetime.fromisoformat(rotated.json()["previous_secret_until"])
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24)
    assert (await http.get(path, headers=merchant)).json()["previous_secret_until"] is not None


async def test_the_event_catalogue_is_listed(http: httpx.AsyncClient, settings: Settings) -> None:
    _, sponsor = await tenant_key(settings)
    listed = (await http.get("/v1/webhooks/event-types", headers=sponsor)).json()["items"]
    assert {e["event_type"] for e in listed} == {
        "webhook.test", "policy.cap_threshold_reached", "policy.budget_threshold_reached",
        "card.usage_threshold_reached",
    }  # fmt: skip


async def test_a_test_event_arrives_signed_and_its_log_is_readable(
    http: httpx.AsyncClient, settings: Settings, pool: Pool, receiver: Receiver
) -> None:
    _, sponsor = await tenant_key(settings)
    url = receiver.plan("test-event", Reply(500, text="not yet"))
    made = await create(http, sponsor, url=url, event_types=["policy.cap_threshold_reached"])
    sent = await http.post(f"/v1/webhooks/endpoints/{made['endpoint_id']}/test", headers=sponsor)
    assert sent.status_code == 202, sent.text
    msg_id = sent.json()["msg_id"]
    assert await deliver(pool) == 1
    assert await deliver(pool, at=1.2) == 1
    got = receiver.at("test-event")
    assert [r.msg_id for r in got] == [msg_id, msg_id]
    signing.verify(str(made["secret"]), body=got[1].body, headers=got[1].headers)
    log = (await http.get(f"/v1/webhooks/messages/{msg_id}/attempts", headers=sponsor)).json()[
        "items"
    ]
    assert [(a["attempt_no"], a["trigger"], a["status"], a["status_code"]) for a in log] == [
        (1, "test", "failed", 500), (2, "test", "succeeded", 200),
    ]  # fmt: skip
    assert log[0]["response_excerpt"] == "not yet"
    assert log[0]["error"] == "HTTP 500 is not a 2xx answer"
    assert log[1]["duration_ms"] >= 0
    message = (await http.get(f"/v1/webhooks/messages/{msg_id}", headers=sponsor)).json()
    assert message["event_type"] == "webhook.test"
    assert message["payload"]["type"] == "webhook.test"
    assert message["payload"]["data"]["endpoint_id"] == made["endpoint_id"]
    [summary] = message["deliveries"]
    assert (summary["status"], summary["attempt_no"]) == ("succeeded", 2)
    assert summary["next_attempt_at"] is None


async def test_messages_are_listed_replayed_and_failed_ones_replayed_since(
    http: httpx.AsyncClient, settings: Settings, pool: Pool, receiver: Receiver
) -> None:
    tenant_id, sponsor = await tenant_key(settings)
    url = receiver.plan("api-replay", *[Reply(500)] * 2 * (len(SCHEDULE) + 1))
    made = await create(http, sponsor, url=url)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await emit(pool, tenant_id=tenant_id, event_key="budget:1:50")
    await emit(
        pool, tenant_id=tenant_id, event_key="cap:1:80", event_type="policy.cap_threshold_reached"
    )
    for step in range(len(SCHEDULE) + 1):
        await deliver(pool, at=step * 1.2)
    listed = (await http.get("/v1/webhooks/messages", headers=sponsor)).json()["items"]
    assert [m["event_key"] for m in listed] == ["cap:1:80", "budget:1:50"]
    assert {m["deliveries"][0]["status"] for m in listed} == {"failed"}
    only_caps = await http.get(
        "/v1/webhooks/messages", params={"event_type": "policy.cap_threshold_reached"},
        headers=sponsor,
    )  # fmt: skip
    assert [m["event_key"] for m in only_caps.json()["items"]] == ["cap:1:80"]
    first = (await http.get("/v1/webhooks/messages", params={"limit": 1}, headers=sponsor)).json()
    paged = await http.get(
        "/v1/webhooks/messages", params={"limit": 1, "cursor": first["next_cursor"]},
        headers=sponsor,
    )  # fmt: skip
    assert [m["event_key"] for m in paged.json()["items"]] == ["budget:1:50"]

    endpoint = f"/v1/webhooks/endpoints/{made['endpoint_id']}"
    again = await http.post(
        f"{endpoint}/replay-failed", json={"since": since.isoformat()}, headers=sponsor
    )
    assert again.status_code == 202, again.text
    assert again.json() == {"messages": 2}
    assert await deliver(pool, at=30) == 2
    one = listed[0]["msg_id"]
    replayed = await http.post(
        f"/v1/webhooks/messages/{one}/replay", json={"endpoint_id": made["endpoint_id"]},
        headers=sponsor,
    )  # fmt: skip
    assert replayed.status_code == 202, replayed.text
    assert await deliver(pool, at=40) == 1
    log = (await http.get(f"/v1/webhooks/messages/{one}/attempts", headers=sponsor)).json()["items"]
    assert [(a["trigger"], a["status"]) for a in log][-3:] == [
        ("event", "failed"), ("replay", "succeeded"), ("replay", "succeeded"),
    ]  # fmt: skip
    backwards = await http.post(
        f"{endpoint}/replay-failed",
        json={"since": since.isoformat(), "until": (since - timedelta(hours=1)).isoformat()},
        headers=sponsor,
    )
    assert_problem(backwards, 422, "invalid-input")


async def test_a_tenant_never_sees_another_tenants_webhooks(
    http: httpx.AsyncClient, settings: Settings, pool: Pool
) -> None:
    owner_id, owner = await tenant_key(settings)
    _, stranger = await tenant_key(settings, Role.MERCHANT)
    made = await create(http, owner, url="https://owner.example.com/hook")
    await emit(pool, tenant_id=owner_id, event_key="private")
    [message] = (await http.get("/v1/webhooks/messages", headers=owner)).json()["items"]
    msg_id, endpoint = message["msg_id"], f"/v1/webhooks/endpoints/{made['endpoint_id']}"
    assert (await http.get("/v1/webhooks/endpoints", headers=stranger)).json() == NOTHING
    assert (await http.get("/v1/webhooks/messages", headers=stranger)).json() == NOTHING
    for answer in (
        await http.get(endpoint, headers=stranger),
        await http.patch(endpoint, json={"enabled": False}, headers=stranger),
        await http.delete(endpoint, headers=stranger),
        await http.post(f"{endpoint}/secret/rotate", headers=stranger),
        await http.post(f"{endpoint}/test", headers=stranger),
        await http.post(f"{endpoint}/replay-failed", json={"since": "2026-01-01T00:00:00Z"},
                        headers=stranger),
    ):  # fmt: skip
        assert_problem(answer, 404, "webhook-endpoint-not-found")
    for answer in (
        await http.get(f"/v1/webhooks/messages/{msg_id}", headers=stranger),
        await http.get(f"/v1/webhooks/messages/{msg_id}/attempts", headers=stranger),
        await http.post(f"/v1/webhooks/messages/{msg_id}/replay",
                        json={"endpoint_id": made["endpoint_id"]}, headers=stranger),
    ):  # fmt: skip
        assert_problem(answer, 404, "webhook-message-not-found")
    # The stranger's own endpoint cannot receive the owner's message either.
    theirs = await create(http, stranger, url="https://stranger.example.com/hook")
    stolen = await http.post(
        f"/v1/webhooks/messages/{msg_id}/replay", json={"endpoint_id": theirs["endpoint_id"]},
        headers=stranger,
    )  # fmt: skip
    assert_problem(stolen, 404, "webhook-message-not-found")
    crossed = await http.post(
        f"/v1/webhooks/messages/{msg_id}/replay", json={"endpoint_id": theirs["endpoint_id"]},
        headers=owner,
    )  # fmt: skip
    assert_problem(crossed, 404, "webhook-endpoint-not-found")
    assert (await http.get(endpoint, headers=owner)).json()["enabled"] is True


async def test_only_sponsors_and_merchants_have_webhooks(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    for role in (Role.DRIVER, Role.PARTNER, Role.OPERATOR):
        _, key = await tenant_key(settings, role)
        answer = await http.get("/v1/webhooks/endpoints", headers=key)
        assert_problem(answer, 403, "role-not-allowed")
    assert_problem(await http.get("/v1/webhooks/endpoints"), 401, "invalid-api-key")


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        ({"url": "ftp://example.com/x"}, 422, "invalid-webhook-url"),
        ({"url": "https://u:p@example.com/x"}, 422, "invalid-webhook-url"),
        ({"url": "https://example.com/" + "a" * 1990}, 422, "invalid-webhook-url"),
        ({"url": "not a url"}, 422, "invalid-webhook-url"),
        ({"url": "https://a.example/x", "event_types": ["policy.no"]}, 422, "unknown-event-type"),
        ({"url": "https://example.com/x", "event_types": "webhook.test"}, 422, "invalid-input"),
        ({"url": "https://example.com/x", "secret": "whsec_mine"}, 422, "invalid-input"),
        ({"url": "https://example.com/x", "description": "d" * 501}, 422, "invalid-input"),
        ({}, 422, "invalid-input"),
    ],
    ids=[
        "scheme", "credentials", "too-long", "no-scheme", "unknown-type",
        "types-not-a-list", "own-secret", "long-description", "empty",
    ],
)  # fmt: skip
async def test_bad_endpoints_are_refused_with_a_problem(
    http: httpx.AsyncClient, settings: Settings, body: dict[str, object], status: int, problem: str
) -> None:
    _, sponsor = await tenant_key(settings)
    answer = await http.post("/v1/webhooks/endpoints", json=body, headers=sponsor)
    assert_problem(answer, status, problem)


async def test_bad_ids_and_states_are_refused_with_a_problem(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, sponsor = await tenant_key(settings)
    made = await create(http, sponsor, url="https://example.com/x", enabled=False)
    endpoint = f"/v1/webhooks/endpoints/{made['endpoint_id']}"
    assert_problem(
        await http.get("/v1/webhooks/endpoints/42", headers=sponsor), 422, "invalid-input"
    )
    assert_problem(
        await http.get(f"/v1/webhooks/endpoints/{uuid.uuid4()}", headers=sponsor),
        404, "webhook-endpoint-not-found",
    )  # fmt: skip
    assert_problem(
        await http.get("/v1/webhooks/messages/evt_1", headers=sponsor), 422, "invalid-input"
    )
    assert_problem(
        await http.get("/v1/webhooks/messages/msg_0123456789abcdefXYZ", headers=sponsor),
        404, "webhook-message-not-found",
    )  # fmt: skip
    assert_problem(
        await http.patch(endpoint, json={"url": "gopher://x"}, headers=sponsor),
        422, "invalid-webhook-url",
    )  # fmt: skip
    assert_problem(
        await http.patch(endpoint, json={"event_types": ["x.y"]}, headers=sponsor),
        422, "unknown-event-type",
    )  # fmt: skip
    assert_problem(
        await http.post(f"{endpoint}/test", headers=sponsor), 409, "webhook-endpoint-disabled"
    )
    assert_problem(
        await http.post(f"{endpoint}/replay-failed", json={"since": "yesterday"}, headers=sponsor),
        422, "invalid-input",
    )  # fmt: skip
    assert_problem(
        await http.get("/v1/webhooks/messages", params={"limit": 0}, headers=sponsor),
        422, "invalid-input",
    )  # fmt: skip


async def test_every_webhook_list_pages(
    http: httpx.AsyncClient, settings: Settings, pool: Pool
) -> None:
    tenant_id, sponsor = await tenant_key(settings)
    key = sponsor["Authorization"].removeprefix("Bearer ")
    pages = await walk_pages(http, "/v1/webhooks/event-types", key=key, limit=1)
    names = sorted(e.event_type for e in EVENT_TYPES)
    assert_each_once_in_order(pages, key=itemgetter("event_type"), expected=names)

    made = [
        (await create(http, sponsor, url=f"https://hooks{n}.example.com/h"))["endpoint_id"]
        for n in range(5)
    ]
    pages = await walk_pages(http, "/v1/webhooks/endpoints", key=key, limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert_each_once_in_order(pages, key=itemgetter("endpoint_id"), expected=made)

    message_ids = [await emit(pool, tenant_id=tenant_id, event_key=f"page:{n}") for n in range(5)]
    pages = await walk_pages(http, "/v1/webhooks/messages", key=key, limit=2)
    expected = [await msg_id_of(pool, m) for m in reversed(message_ids)]
    assert_each_once_in_order(pages, key=itemgetter("msg_id"), expected=expected)
    assert all(len(m["deliveries"]) == 5 for page in pages for m in page)  # type: ignore[arg-type]

    sql = "SELECT attempt_id FROM webhook_attempts WHERE message_id = %s ORDER BY attempt_id"
    attempts = [a for (a,) in await rows(pool, sql, message_ids[0])]
    path = f"/v1/webhooks/messages/{expected[-1]}/attempts"
    pages = await walk_pages(http, path, key=key, limit=2)
    assert_each_once_in_order(pages, key=itemgetter("attempt_id"), expected=attempts)


async def test_the_webhook_lists_refuse_foreign_cursors(
    http: httpx.AsyncClient, settings: Settings, pool: Pool
) -> None:
    tenant_id, sponsor = await tenant_key(settings)
    await create(http, sponsor, url="https://cursors.example.com/h")
    await create(http, sponsor, url="https://cursors.example.com/g")
    msg_id = await msg_id_of(pool, await emit(pool, tenant_id=tenant_id, event_key="cursor"))
    first = await http.get("/v1/webhooks/endpoints", params={"limit": 1}, headers=sponsor)
    foreign = first.json()["next_cursor"]
    for path in (
        "/v1/webhooks/event-types",
        "/v1/webhooks/messages",
        f"/v1/webhooks/messages/{msg_id}/attempts",
    ):
        answer = await http.get(path, params={"cursor": foreign}, headers=sponsor)
        assert_bad_cursor(answer)
    answer = await http.get("/v1/webhooks/endpoints", params={"cursor": "e30"}, headers=sponsor)
    assert_bad_cursor(answer)
