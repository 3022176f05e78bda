"""Retention: messages whose deliveries are over are purged, with their delivery log, after
`webhook_retention_days`; pending and recent ones stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from psycopg_pool import AsyncConnectionPool

from flowbill import db
from flowbill.settings import Settings
from tests.webhooks.conftest import LOOPBACK, Receiver, emit, new_endpoint, new_tenant, rows
from webhooks import delivery

pytestmark = pytest.mark.usefixtures("own_queue")

Pool = AsyncConnectionPool[db.Connection]


async def age(pool: Pool, message_ids: list[int], *, days: int) -> None:
    await rows(
        pool,
        """UPDATE webhook_messages SET created_at = now() - make_interval(days => %s)
           WHERE message_id = ANY(%s) RETURNING 1""",
        days,
        message_ids,
    )


async def messages_of(pool: Pool, tenant_id: UUID) -> list[int]:
    found = await rows(
        pool,
        "SELECT message_id FROM webhook_messages WHERE tenant_id = %s ORDER BY message_id",
        tenant_id,
    )
    return [m for (m,) in found]


async def test_the_purge_deletes_old_finished_messages_and_their_attempts_in_batches(
    settings: Settings, pool: Pool, receiver: Receiver
) -> None:
    tenant_id = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant_id, url=receiver.plan("p"))
    old = [await emit(pool, tenant_id=tenant_id, event_key=f"old:{n}") for n in range(5)]
    async with delivery.client(settings, policy=LOOPBACK) as http:
        assert await delivery.deliver_due(pool, http, now=datetime.now(UTC), limit=10) == 5
    kept = await emit(pool, tenant_id=tenant_id, event_key="recent")
    await age(pool, old, days=40)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    messages, attempts = await delivery.purge(pool, created_before=cutoff, batch=2)
    assert messages >= 5
    assert attempts >= 5
    assert await messages_of(pool, tenant_id) == [kept]
    assert await rows(
        pool, "SELECT count(*) FROM webhook_attempts WHERE message_id = ANY(%s)", old
    ) == [(0,)]
    assert await delivery.purge(pool, created_before=cutoff) == (0, 0)


async def test_run_purges_finished_messages_after_the_retention(
    settings: Settings, pool: Pool, receiver: Receiver
) -> None:
    """`flowbill webhooks --once` purges what retention says; the purge keeps a message
    whose delivery is still pending, and recent ones."""
    tenant_id = await new_tenant(settings)
    await new_endpoint(pool, tenant_id=tenant_id, url=receiver.plan("kept"))
    old_done = await emit(pool, tenant_id=tenant_id, event_key="old-done")
    async with delivery.client(settings, policy=LOOPBACK) as http:
        await delivery.deliver_due(pool, http, now=datetime.now(UTC), limit=10)
    old_pending = await emit(pool, tenant_id=tenant_id, event_key="old-pending")
    recent = await emit(pool, tenant_id=tenant_id, event_key="recent")
    await rows(
        pool,
        """UPDATE webhook_messages SET created_at = now() - interval '91 days'
           WHERE message_id = ANY(%s) RETURNING 1""",
        [old_done, old_pending],
    )
    # Hold the pending one's endpoint back, so that `run` does not deliver it first.
    await rows(
        pool,
        "UPDATE webhook_attempts SET due_at = now() + interval '1 hour' WHERE message_id = %s"
        " RETURNING 1",
        old_pending,
    )
    quick = settings.model_copy(update={"webhook_retention_days": 90.0})
    await delivery.run(quick, once=True, policy=LOOPBACK)
    left = await rows(
        pool,
        "SELECT message_id FROM webhook_messages WHERE tenant_id = %s ORDER BY message_id",
        tenant_id,
    )
    assert left == [(old_pending,), (recent,)]
    orphans = await rows(
        pool, "SELECT count(*) FROM webhook_attempts WHERE message_id = %s", old_done
    )
    assert orphans == [(0,)]
