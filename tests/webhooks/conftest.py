"""Webhook fixtures: a pool, receivers served over real HTTP, and tenants with endpoints.

`deliver_due` sends whatever is due in the whole database, so the modules that deliver use
`own_queue`: before each test every attempt still pending (left over by any earlier test) is
cancelled, and these tests own the queue while they run.

The receivers listen on http://127.0.0.1, which the egress policy refuses: these tests run
under the development settings that allow plain http and private addresses
(`FLOWBILL_WEBHOOK_ALLOW_HTTP`, `FLOWBILL_WEBHOOK_ALLOW_PRIVATE`); tests/security shows the
refusals with them off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flowbill import db
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import make_tenant, serving
from webhooks import service
from webhooks.egress import EgressPolicy, system_resolver
from webhooks.schemas import EndpointCreate

# The development policy the receivers need (loopback, plain http).
LOOPBACK = EgressPolicy(resolver=system_resolver, allow_http=True, allow_private=True)

# Short enough that a test walks the whole schedule by moving `now`, never by sleeping.
SCHEDULE = (1.0, 1.0, 1.0)
TIMEOUT = 0.5


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    text: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """A webhook receiver: records every request; replies as scripted per path (200 after)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[Reply]] = {}
        self.url = ""

    def plan(self, path: str, *replies: Reply) -> str:
        self.script[path] = list(replies)
        return f"{self.url}/{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.received.append(
            Received(path=path, headers=dict(request.headers), body=await request.body())
        )
        replies = self.script.get(path)
        reply = replies.pop(0) if replies else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return Response(reply.text, status_code=reply.status, headers=reply.headers)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])


@pytest.fixture(autouse=True)
def receivers_on_loopback(settings: Settings, api_settings: Settings) -> Iterator[None]:
    """The API and the sender run under the development egress settings while a webhook test
    runs (the API reads its settings object at each request)."""
    both = (settings, api_settings)
    before = [(s.webhook_allow_http, s.webhook_allow_private) for s in both]
    for each in both:
        each.webhook_allow_http = each.webhook_allow_private = True
    yield
    for each, (http, private) in zip(both, before, strict=True):
        each.webhook_allow_http, each.webhook_allow_private = http, private


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    async with serving(found.app()) as url:
        found.url = url
        yield found


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool[db.Connection]]:
    opened = db.create_pool(settings, name="flowbill-webhook-tests")
    await opened.open(wait=True)
    yield opened
    await opened.close()


@pytest.fixture
async def own_queue(settings: Settings) -> None:
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            await conn.execute(
                """UPDATE webhook_attempts SET status = 'cancelled', error = 'test isolation'
                   WHERE status = 'pending'"""
            )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def committed(pool: AsyncConnectionPool[db.Connection]) -> AsyncIterator[db.Connection]:
    async with db.transaction(pool) as conn:
        yield conn


async def new_tenant(settings: Settings, role: Role = Role.SPONSOR) -> UUID:
    tenant_id, _ = await make_tenant(settings, role=role)
    return UUID(tenant_id)


async def new_endpoint(
    pool: AsyncConnectionPool[db.Connection], *, tenant_id: UUID, url: str, **spec: Any
) -> tuple[UUID, str]:
    """A committed endpoint; returns (endpoint id, secret)."""
    async with committed(pool) as conn:
        created = await service.create_endpoint(
            conn, tenant_id=tenant_id, spec=EndpointCreate(url=url, **spec), now=datetime.now(UTC),
            egress=LOOPBACK,
        )  # fmt: skip
    return created.endpoint_id, created.secret


async def emit(
    pool: AsyncConnectionPool[db.Connection],
    *,
    tenant_id: UUID,
    event_key: str,
    event_type: str = "policy.budget_threshold_reached",
    payload: dict[str, object] | None = None,
) -> int:
    async with committed(pool) as conn:
        return await service.enqueue(
            conn, tenant_id=tenant_id, event_type=event_type, event_key=event_key,
            payload=payload or {"policy_id": 7, "threshold_percent": 80},
            occurred_at=datetime.now(UTC),
        )  # fmt: skip


async def rows(
    pool: AsyncConnectionPool[db.Connection], sql: str, *params: object
) -> list[tuple[Any, ...]]:
    async with committed(pool) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def attempts_of(
    pool: AsyncConnectionPool[db.Connection], message_id: int
) -> list[tuple[Any, ...]]:
    """(attempt_no, trigger, status, status_code, error) of a message, in order."""
    return await rows(
        pool,
        """SELECT attempt_no, trigger, status, status_code, error FROM webhook_attempts
           WHERE message_id = %s ORDER BY attempt_id""",
        message_id,
    )


async def msg_id_of(pool: AsyncConnectionPool[db.Connection], message_id: int) -> str:
    sql = "SELECT msg_id FROM webhook_messages WHERE message_id = %s"
    found = await rows(pool, sql, message_id)
    msg_id: str = found[0][0]
    return msg_id
