"""Enqueue and delivery against a real database and receivers over real HTTP.

Time is moved by passing `now` to deliver_due (the schedule here is 1 s between attempts), so
no test sleeps through a retry schedule.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from flowbill import db
from flowbill.settings import Settings
from tests.conftest import as_component, free_port
from tests.webhooks.conftest import (
    LOOPBACK,
    SCHEDULE,
    TIMEOUT,
    Receiver,
    Reply,
    attempts_of,
    committed,
    emit,
    msg_id_of,
    new_endpoint,
    new_tenant,
    rows,
)
from webhooks import delivery, repository, service, signing
from webhooks.errors import UnknownEventType
from webhooks.schemas import EndpointUpdate

pytestmark = pytest.mark.usefixtures("own_queue")

Pool = AsyncConnectionPool[db.Connection]


@pytest.fixture
async def sender(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The sender's HTTP client, as `flowbill webhooks` builds it (the `http` fixture is the
    API's)."""
    async with delivery.client(settings) as client:
        yield client


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def deliver(pool: Pool, sender: httpx.AsyncClient, *, at: float = 0, limit: int = 100) -> int:
    return await delivery.deliver_due(
        pool, sender, now=later(at), limit=limit, timeout_seconds=TIMEOUT, schedule=SCHEDULE
    )


async def test_a_message_is_delivered_signed_and_logged(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    endpoint_id, secret = await new_endpoint(
        pool, tenant_id=tenant, url=receiver.plan("a", Reply(text="thanks " * 200))
    )
    message_id = await emit(pool, tenant_id=tenant, event_key="budget:7:80")
    assert await deliver(pool, sender) == 1
    [got] = receiver.at("a")
    signing.verify(secret, body=got.body, headers=got.headers)
    assert got.msg_id == await msg_id_of(pool, message_id)
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 10
    body = json.loads(got.body)
    assert body["type"] == "policy.budget_threshold_reached"
    assert body["data"] == {"policy_id": 7, "threshold_percent": 80}
    assert datetime.fromisoformat(body["timestamp"]) <= datetime.now(UTC)
    [logged] = await rows(
        pool,
        """SELECT endpoint_id, attempt_no, status, status_code, length(response_excerpt),
                  duration_ms, error, sent_at FROM webhook_attempts WHERE message_id = %s""",
        message_id,
    )
    assert logged[:5] == (endpoint_id, 1, "succeeded", 200, 500)
    assert logged[5] >= 0
    assert logged[6] is None
    assert logged[7] is not None
    assert await deliver(pool, sender) == 0
    assert len(receiver.at("a")) == 1


async def test_enqueue_is_exactly_once_per_event_key(
    pool: Pool, settings: Settings, receiver: Receiver
) -> None:
    tenant, other = await new_tenant(settings), await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("x"))
    await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("y"))
    first = await emit(pool, tenant_id=tenant, event_key="cap:sim1:100")
    assert await emit(pool, tenant_id=tenant, event_key="cap:sim1:100", payload={"n": 2}) == first
    async with committed(pool) as conn:
        now = datetime.now(UTC)
        again = [
            await service.enqueue(
                conn,
                tenant_id=tenant,
                event_type="webhook.test",
                event_key="k2",
                payload={},
                occurred_at=now,
            )
            for _ in range(2)
        ]
    assert again[0] == again[1] != first
    assert await emit(pool, tenant_id=other, event_key="cap:sim1:100") != first
    assert len(await attempts_of(pool, first)) == 2
    assert len(await attempts_of(pool, again[0])) == 2
    counted = await rows(pool, "SELECT count(*) FROM webhook_messages WHERE tenant_id = %s", tenant)
    assert counted == [(2,)]


async def test_concurrent_enqueues_of_one_key_make_one_message(
    pool: Pool, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("c"))
    key = f"race:{secrets.token_hex(4)}"
    ids = await asyncio.gather(*(emit(pool, tenant_id=tenant, event_key=key) for _ in range(6)))
    assert len(set(ids)) == 1
    assert len(await attempts_of(pool, ids[0])) == 1


async def test_enqueue_belongs_to_the_callers_transaction(pool: Pool, settings: Settings) -> None:
    tenant = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant, url="https://example.invalid/hook")
    conn = await pool.getconn()
    try:
        async with conn.transaction(force_rollback=True):
            await service.enqueue(
                conn, tenant_id=tenant, event_type="webhook.test", event_key="rolled-back",
                payload={}, occurred_at=datetime.now(UTC),
            )  # fmt: skip
    finally:
        await pool.putconn(conn)
    found = await rows(pool, "SELECT 1 FROM webhook_messages WHERE tenant_id = %s", tenant)
    assert found == []


async def test_enqueue_refuses_an_event_type_not_in_the_catalogue(
    pool: Pool, settings: Settings
) -> None:
    tenant = await new_tenant(settings)
    with pytest.raises(UnknownEventType):
        await emit(pool, tenant_id=tenant, event_key="k", event_type="policy.exploded")


async def test_a_message_goes_to_each_enabled_endpoint_that_takes_its_type(
    pool: Pool, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    every, _ = await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("all"))
    chosen, _ = await new_endpoint(
        pool, tenant_id=tenant, url=receiver.plan("budget"),
        event_types=["policy.budget_threshold_reached", "webhook.test"],
    )  # fmt: skip
    await new_endpoint(
        pool, tenant_id=tenant, url=receiver.plan("cap"),
        event_types=["policy.cap_threshold_reached"],
    )  # fmt: skip
    await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("off"), enabled=False)
    message_id = await emit(pool, tenant_id=tenant, event_key="fan-out")
    sent_to = await rows(
        pool, "SELECT endpoint_id FROM webhook_attempts WHERE message_id = %s", message_id
    )
    assert {e for (e,) in sent_to} == {every, chosen}


async def test_failures_are_retried_on_schedule_until_one_succeeds(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    url = receiver.plan(
        "flaky", Reply(500, text="database down"), Reply(503, headers={"retry-after": "2"})
    )
    _, secret = await new_endpoint(pool, tenant_id=tenant, url=url)
    message_id = await emit(pool, tenant_id=tenant, event_key="retry-me")
    assert await deliver(pool, sender) == 1
    # The first retry is due after SCHEDULE[0] (plus jitter), not before.
    assert await deliver(pool, sender, at=0.5) == 0
    assert await deliver(pool, sender, at=1.2) == 1
    # The 503 asked for 2 s: more than the schedule's 1 s.
    assert await deliver(pool, sender, at=2.5) == 0
    assert await deliver(pool, sender, at=3.5) == 1
    got = receiver.at("flaky")
    assert len(got) == 3
    assert len({r.msg_id for r in got}) == 1
    assert len({r.headers["webhook-signature"] for r in got}) >= 1
    for request in got:
        signing.verify(secret, body=request.body, headers=request.headers)
    assert await attempts_of(pool, message_id) == [
        (1, "event", "failed", 500, "HTTP 500 is not a 2xx answer"),
        (2, "event", "failed", 503, "HTTP 503 is not a 2xx answer"),
        (3, "event", "succeeded", 200, None),
    ]
    [(excerpt,)] = await rows(
        pool,
        "SELECT response_excerpt FROM webhook_attempts WHERE message_id = %s AND attempt_no = 1",
        message_id,
    )
    assert excerpt == "database down"


async def test_a_timeout_is_a_failure_and_is_retried(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("slow", Reply(delay=2.0)))
    message_id = await emit(pool, tenant_id=tenant, event_key="slow")
    started = asyncio.get_running_loop().time()
    assert await deliver(pool, sender) == 1
    assert asyncio.get_running_loop().time() - started < 1.5
    assert await deliver(pool, sender, at=1.2) == 1
    logged = await attempts_of(pool, message_id)
    assert logged == [
        (1, "event", "failed", None, f"no response within {TIMEOUT:g} s"),
        (2, "event", "succeeded", 200, None),
    ]


async def test_unreachable_and_redirecting_endpoints_fail(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant, url=f"http://127.0.0.1:{free_port()}/gone")
    message_id = await emit(pool, tenant_id=tenant, event_key="nowhere")
    assert await deliver(pool, sender) == 1
    [(_, _, status, code, error)] = (await attempts_of(pool, message_id))[:1]
    assert (status, code) == ("failed", None)
    assert error.startswith("ConnectError")
    other = await new_tenant(settings)
    moved = receiver.plan("moved", Reply(302, headers={"location": f"{receiver.url}/else"}))
    await new_endpoint(pool, tenant_id=other, url=moved)
    redirected = await emit(pool, tenant_id=other, event_key="moved")
    await deliver(pool, sender)
    assert (await attempts_of(pool, redirected))[0][2:4] == ("failed", 302)
    assert receiver.at("else") == []


async def test_delivery_is_given_up_after_the_last_retry_and_nothing_is_disabled(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    url = receiver.plan("down", *[Reply(500)] * 10)
    endpoint_id, _ = await new_endpoint(pool, tenant_id=tenant, url=url)
    message_id = await emit(pool, tenant_id=tenant, event_key="doomed")
    for step in range(len(SCHEDULE) + 1):
        assert await deliver(pool, sender, at=step * 1.2) == 1
    assert await deliver(pool, sender, at=3600) == 0
    logged = await attempts_of(pool, message_id)
    assert [(n, s) for n, _, s, _, _ in logged] == [(n, "failed") for n in range(1, 5)]
    assert len(receiver.at("down")) == len(SCHEDULE) + 1
    async with committed(pool) as conn:
        endpoint = await service.get_endpoint(
            conn, tenant_id=tenant, endpoint_id=endpoint_id, now=datetime.now(UTC)
        )
    assert endpoint.enabled


async def test_two_workers_never_send_the_same_attempt(
    pool: Pool, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    url = receiver.plan("busy", *[Reply(delay=0.05)] * 60)
    await new_endpoint(pool, tenant_id=tenant, url=url)
    for n in range(40):
        await emit(pool, tenant_id=tenant, event_key=f"busy:{n}")
    other_pool = db.create_pool(settings, name="flowbill-webhook-tests-2")
    await other_pool.open(wait=True)
    try:
        async with delivery.client(settings) as one, delivery.client(settings) as two:
            now = datetime.now(UTC)
            sent = await asyncio.gather(
                *(
                    delivery.deliver_due(p, h, now=now, limit=7, timeout_seconds=5)
                    for _ in range(4)
                    for p, h in ((pool, one), (other_pool, two))
                )
            )
            while await delivery.deliver_due(pool, one, now=now, limit=7, timeout_seconds=5):
                pass
    finally:
        await other_pool.close()
    assert sum(sent) <= 40
    per_message = Counter(r.msg_id for r in receiver.at("busy"))
    assert len(per_message) == 40
    assert set(per_message.values()) == {1}


async def test_a_claim_is_a_lease_that_another_worker_takes_over_when_it_ends(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("lease"))
    message_id = await emit(pool, tenant_id=tenant, event_key="lease")
    now = datetime.now(UTC)
    # A worker claims it and dies before sending.
    async with committed(pool) as conn:
        [claimed] = await repository.claim_due(
            conn, now=now, lease_until=now + timedelta(seconds=30), limit=10
        )
    assert claimed.message_id == message_id
    assert await deliver(pool, sender, at=10) == 0
    assert await deliver(pool, sender, at=31) == 1
    assert len(receiver.at("lease")) == 1


async def test_after_a_rotation_both_secrets_sign_for_a_day(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    endpoint_id, old = await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("rot"))
    async with committed(pool) as conn:
        rotated = await service.rotate_secret(
            conn, tenant_id=tenant, endpoint_id=endpoint_id, now=datetime.now(UTC)
        )
    assert rotated.secret != old
    await emit(pool, tenant_id=tenant, event_key="during")
    await deliver(pool, sender)
    [during] = receiver.at("rot")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, rotated.secret):
        signing.verify(secret, body=during.body, headers=during.headers)
    await emit(pool, tenant_id=tenant, event_key="after")
    await deliver(pool, sender, at=25 * 3600)
    after = receiver.at("rot")[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    signing.verify(rotated.secret, body=after.body, headers=after.headers)
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(old, body=after.body, headers=after.headers)


async def test_a_disabled_endpoint_holds_its_queue_until_enabled(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    endpoint_id, _ = await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("paused"))
    await emit(pool, tenant_id=tenant, event_key="queued")

    async def enable(on: bool) -> None:
        async with committed(pool) as conn:
            await service.update_endpoint(
                conn, tenant_id=tenant, endpoint_id=endpoint_id, spec=EndpointUpdate(enabled=on),
                now=datetime.now(UTC), egress=LOOPBACK,
            )  # fmt: skip

    await enable(False)
    await emit(pool, tenant_id=tenant, event_key="while-disabled")
    assert await deliver(pool, sender) == 0
    await enable(True)
    assert await deliver(pool, sender) == 1
    assert len(receiver.at("paused")) == 1


async def test_replay_sends_a_message_again_as_a_new_chain(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    url = receiver.plan("replay", Reply(500), Reply(500))
    endpoint_id, secret = await new_endpoint(pool, tenant_id=tenant, url=url)
    message_id = await emit(pool, tenant_id=tenant, event_key="again")
    await deliver(pool, sender)
    msg_id = await msg_id_of(pool, message_id)
    async with committed(pool) as conn:
        # The retry still waiting is replaced by the replay, not sent besides it.
        await service.replay(conn, tenant_id=tenant, msg_id=msg_id, endpoint_id=endpoint_id)
    assert await deliver(pool, sender, at=5) == 1
    assert await deliver(pool, sender, at=10) == 1
    assert await deliver(pool, sender, at=20) == 0
    assert [a[:3] for a in await attempts_of(pool, message_id)] == [
        (1, "event", "failed"),
        (2, "event", "cancelled"),
        (1, "replay", "failed"),
        (2, "replay", "succeeded"),
    ]
    got = receiver.at("replay")
    assert [r.msg_id for r in got] == [msg_id] * 3
    signing.verify(secret, body=got[-1].body, headers=got[-1].headers)
    assert got[0].body == got[-1].body


async def test_replay_failed_since_resends_only_what_was_given_up(
    pool: Pool, sender: httpx.AsyncClient, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    url = receiver.plan("outage", *[Reply(500)] * 8)
    endpoint_id, _ = await new_endpoint(pool, tenant_id=tenant, url=url)
    since = datetime.now(UTC) - timedelta(seconds=1)
    failed = [await emit(pool, tenant_id=tenant, event_key=f"lost:{n}") for n in range(2)]
    for step in range(len(SCHEDULE) + 1):
        await deliver(pool, sender, at=step * 1.2)
    assert len(receiver.at("outage")) == 8
    delivered = await emit(pool, tenant_id=tenant, event_key="fine")
    await deliver(pool, sender, at=10)
    async with committed(pool) as conn:
        assert (
            await service.replay_failed(
                conn, tenant_id=tenant, endpoint_id=endpoint_id, since=since, until=None
            )
            == 2
        )
        assert await service.replay_failed(
            conn, tenant_id=tenant, endpoint_id=endpoint_id, since=later(60), until=None
        ) == 0  # fmt: skip
    assert await deliver(pool, sender, at=20) == 2
    resent = {r.msg_id for r in receiver.at("outage")[9:]}
    assert resent == {await msg_id_of(pool, m) for m in failed}
    assert delivered not in failed


async def test_run_once_delivers_what_is_due(
    pool: Pool, settings: Settings, receiver: Receiver
) -> None:
    tenant = await new_tenant(settings)
    _, secret = await new_endpoint(pool, tenant_id=tenant, url=receiver.plan("run"))
    await emit(pool, tenant_id=tenant, event_key="by-run")
    quick = settings.model_copy(
        update={"webhook_timeout_seconds": TIMEOUT, "webhook_retry_schedule_seconds": [1.0]}
    )
    await delivery.run(as_component(quick, "webhooks"), once=True)
    [got] = receiver.at("run")
    signing.verify(secret, body=got.body, headers=got.headers)
