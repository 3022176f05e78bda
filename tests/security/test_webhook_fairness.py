# The webhook fixtures are imported by name, and tests name them as parameters.
# ruff: noqa: F811
"""Webhook fairness: an endpoint that hangs holds only its own slots, so another tenant's
webhooks arrive on time; test events are rate-limited per endpoint.

The tarpits are real TCP servers: one accepts and never answers, one answers its headers and
then trickles a byte now and then, forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from uuid import UUID

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from flowbill import db
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant, wait_for
from tests.webhooks.conftest import (  # noqa: F401 (fixtures: own_queue, pool, receiver)
    LOOPBACK,
    Receiver,
    emit,
    new_endpoint,
    own_queue,
    pool,
    receiver,
    rows,
)
from webhooks import delivery, egress

pytestmark = pytest.mark.usefixtures("own_queue")

Pool = AsyncConnectionPool[db.Connection]
TIMEOUT = 3.0


@dataclass
class Tarpit:
    """A TCP server that takes requests and never finishes an answer."""

    trickle: bool = False
    open_connections: int = 0
    most_at_once: int = 0
    accepted: int = 0
    url: str = ""
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_connections += 1
        self.most_at_once = max(self.most_at_once, self.open_connections)
        self._writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.trickle:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                while True:
                    writer.write(b".")
                    await writer.drain()
                    await asyncio.sleep(0.2)
            else:
                await reader.read()  # until the sender gives up and closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()


@contextlib.asynccontextmanager
async def tarpit(*, trickle: bool = False) -> AsyncIterator[Tarpit]:
    pit = Tarpit(trickle=trickle)
    server = await asyncio.start_server(pit._hold, "127.0.0.1", 0)
    pit.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    try:
        yield pit
    finally:
        server.close()
        for writer in pit._writers:
            writer.close()


async def tenant(settings: Settings) -> UUID:
    tenant_id, _ = await make_tenant(settings, role=Role.SPONSOR)
    return UUID(tenant_id)


async def test_a_hanging_endpoint_delays_no_other_tenant(
    settings: Settings, pool: Pool, receiver: Receiver
) -> None:
    """Tenant A has three endpoints that hang (two never answer, one trickles) and a backlog
    of events for each; tenant B's events, queued after all of A's, still arrive at once.
    A holds no more slots than its limits give it."""
    limits = delivery.Limits(total=8, per_endpoint=2, per_tenant=4)
    a, b = await tenant(settings), await tenant(settings)
    async with tarpit() as one, tarpit() as two, tarpit(trickle=True) as three:
        for pit in (one, two, three):
            await new_endpoint(pool, tenant_id=a, url=pit.url)
        await new_endpoint(pool, tenant_id=b, url=receiver.plan("b"))
        for n in range(10):
            await emit(pool, tenant_id=a, event_key=f"a:{n}")
        async with (
            egress.client(LOOPBACK, timeout_seconds=TIMEOUT, max_connections=8) as http,
            asyncio.TaskGroup() as group,
        ):
            sender = delivery.Sender(
                pool, http, limits=limits, timeout_seconds=TIMEOUT, schedule=(60.0,)
            )
            stop = asyncio.Event()
            group.create_task(sender.serve(stop, interval_seconds=0.05))

            async def a_is_hanging() -> bool:
                return one.open_connections + two.open_connections + three.open_connections == 4

            await wait_for(a_is_hanging, timeout=5, interval=0.02)
            queued_at = time.monotonic()
            for n in range(3):
                await emit(pool, tenant_id=b, event_key=f"b:{n}")

            async def b_arrived() -> bool:
                return len(receiver.at("b")) == 3

            await wait_for(b_arrived, timeout=TIMEOUT, interval=0.02)
            b_took = time.monotonic() - queued_at
            # A's requests are all still hanging: B did not wait for any of them to end.
            assert b_took < TIMEOUT / 2
            assert one.open_connections + two.open_connections + three.open_connections == 4
            stop.set()
    assert max(one.most_at_once, two.most_at_once, three.most_at_once) <= 2
    assert one.accepted + two.accepted + three.accepted == 4
    b_log = await rows(
        pool,
        """SELECT a.status FROM webhook_attempts a JOIN webhook_messages m USING (message_id)
           WHERE m.tenant_id = %s""",
        b,
    )
    assert b_log == [("succeeded",)] * 3
    a_log = await rows(
        pool,
        """SELECT a.status, a.error, a.response_excerpt FROM webhook_attempts a
           JOIN webhook_messages m USING (message_id)
           WHERE m.tenant_id = %s AND a.sent_at IS NOT NULL""",
        a,
    )
    # The four A sent timed out (the trickle's bytes included: it never finished); the rest
    # of A's backlog waits its turn.
    assert sorted(s for s, _, _ in a_log) == ["failed"] * 4
    assert {e for _, e, _ in a_log} == {f"no response within {TIMEOUT:g} s"}
    assert {x for _, _, x in a_log} == {None}


async def test_test_events_are_rate_limited_per_endpoint(
    settings: Settings, http: httpx.AsyncClient, pool: Pool
) -> None:
    per_minute = settings.webhook_test_events_per_minute
    tenant_id, key = await make_tenant(settings, role=Role.SPONSOR)
    headers = bearer(key)
    ids = []
    for path in ("busy", "quiet"):
        # Nothing is sent in this test: a name that does not resolve (yet) is registered.
        made = await http.post(
            "/v1/webhooks/endpoints", json={"url": f"https://{path}.example/in"}, headers=headers
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["endpoint_id"])
    busy, quiet = ids
    for _ in range(per_minute):
        sent = await http.post(f"/v1/webhooks/endpoints/{busy}/test", headers=headers)
        assert sent.status_code == 202, sent.text

    async def test_messages() -> list[tuple[object, ...]]:
        return await rows(
            pool,
            """SELECT m.msg_id FROM webhook_messages m WHERE m.tenant_id = %s
               AND m.event_type = 'webhook.test' ORDER BY m.message_id""",
            UUID(tenant_id),
        )

    before = await test_messages()
    refused = await http.post(f"/v1/webhooks/endpoints/{busy}/test", headers=headers)
    problem = assert_problem(refused, 429, "webhook-test-events-limited")
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 60
    assert problem["retry_after"] == wait
    assert await test_messages() == before
    # Another endpoint of the same tenant is not held up by the first one's limit.
    other = await http.post(f"/v1/webhooks/endpoints/{quiet}/test", headers=headers)
    assert other.status_code == 202, other.text
    assert len(await test_messages()) == per_minute + 1


async def test_concurrent_test_requests_never_pass_the_limit(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    per_minute = settings.webhook_test_events_per_minute
    _, key = await make_tenant(settings, role=Role.SPONSOR)
    headers = bearer(key)
    made = await http.post(
        "/v1/webhooks/endpoints", json={"url": "https://race.example/in"}, headers=headers
    )
    endpoint_id = made.json()["endpoint_id"]
    answers = await asyncio.gather(
        *(
            http.post(f"/v1/webhooks/endpoints/{endpoint_id}/test", headers=headers)
            for _ in range(per_minute + 5)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * per_minute + [429] * 5
