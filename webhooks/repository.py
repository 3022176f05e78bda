"""SQL of webhook endpoints, messages and attempts (the queue and the delivery log)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class EndpointRow:
    endpoint_id: UUID
    tenant_id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    previous_secret_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRow:
    message_id: int
    msg_id: str
    event_type: str
    event_key: str
    body: str
    occurred_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SummaryRow:
    message_id: int
    endpoint_id: UUID
    status: str
    attempt_no: int
    last_sent_at: datetime | None
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempt_id: int
    endpoint_id: UUID
    attempt_no: int
    trigger: str
    status: str
    due_at: datetime
    sent_at: datetime | None
    duration_ms: int | None
    status_code: int | None
    response_excerpt: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DueAttempt:
    """An attempt a worker has claimed, with what it needs to send it."""

    attempt_id: int
    message_id: int
    endpoint_id: UUID
    tenant_id: UUID
    attempt_no: int
    trigger: str
    msg_id: str
    body: str
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None


_ENDPOINT_COLUMNS = (
    "endpoint_id, tenant_id, url, description, event_types, enabled, previous_secret_until,"
    " created_at, updated_at"
)
_MESSAGE_COLUMNS = "message_id, msg_id, event_type, event_key, body, occurred_at, created_at"
_ATTEMPT_COLUMNS = (
    "attempt_id, endpoint_id, attempt_no, trigger, status, due_at, sent_at, duration_ms,"
    " status_code, response_excerpt, error"
)


# --- Endpoints ------------------------------------------------------------------------------


async def count_endpoints(conn: Connection, tenant_id: UUID) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = %s AND deleted_at IS NULL",
        (tenant_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    count: int = row[0]
    return count


async def insert_endpoint(
    conn: Connection,
    *,
    tenant_id: UUID,
    url: str,
    description: str,
    event_types: list[str],
    enabled: bool,
    secret: str,
) -> EndpointRow:
    async with conn.cursor(row_factory=class_row(EndpointRow)) as cur:
        await cur.execute(
            f"""INSERT INTO webhook_endpoints
                    (tenant_id, url, description, event_types, enabled, secret)
                VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_ENDPOINT_COLUMNS}""",
            (tenant_id, url, description, event_types, enabled, secret),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def list_endpoints(
    conn: Connection, tenant_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int
) -> list[EndpointRow]:
    """The tenant's endpoints, oldest first, after the (created_at, endpoint_id) key."""
    async with conn.cursor(row_factory=class_row(EndpointRow)) as cur:
        await cur.execute(
            f"""SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints
                WHERE tenant_id = %(tenant)s AND deleted_at IS NULL
                  AND (%(at)s::timestamptz IS NULL
                       OR (created_at, endpoint_id) > (%(at)s, %(id)s))
                ORDER BY created_at, endpoint_id LIMIT %(limit)s""",
            {"tenant": tenant_id, "at": after and after[0], "id": after and after[1],
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()


async def get_endpoint(
    conn: Connection, *, tenant_id: UUID, endpoint_id: UUID, for_update: bool = False
) -> EndpointRow | None:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(EndpointRow)) as cur:
        await cur.execute(
            f"""SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints
                WHERE tenant_id = %s AND endpoint_id = %s AND deleted_at IS NULL{lock}""",
            (tenant_id, endpoint_id),
        )
        return await cur.fetchone()


async def recent_tests(
    conn: Connection, *, endpoint_id: UUID, window: timedelta
) -> tuple[int, timedelta | None]:
    """Test events queued to the endpoint within `window` of the database's clock: how many,
    and how long ago the oldest of them was."""
    cur = await conn.execute(
        """SELECT count(*), now() - min(created_at) FROM webhook_attempts
           WHERE endpoint_id = %s AND trigger = 'test' AND attempt_no = 1
             AND created_at > now() - %s""",
        (endpoint_id, window),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def update_endpoint(
    conn: Connection,
    *,
    tenant_id: UUID,
    endpoint_id: UUID,
    url: str | None,
    description: str | None,
    event_types: list[str] | None,
    enabled: bool | None,
) -> EndpointRow | None:
    """Change the fields given (None: keep)."""
    async with conn.cursor(row_factory=class_row(EndpointRow)) as cur:
        await cur.execute(
            f"""UPDATE webhook_endpoints SET
                    url = coalesce(%(url)s, url),
                    description = coalesce(%(description)s, description),
                    event_types = coalesce(%(event_types)s::text[], event_types),
                    enabled = coalesce(%(enabled)s, enabled),
                    updated_at = now()
                WHERE tenant_id = %(tenant)s AND endpoint_id = %(endpoint)s
                  AND deleted_at IS NULL
                RETURNING {_ENDPOINT_COLUMNS}""",
            {
                "url": url, "description": description, "event_types": event_types,
                "enabled": enabled, "tenant": tenant_id, "endpoint": endpoint_id,
            },
        )  # fmt: skip
        return await cur.fetchone()


async def rotate_secret(
    conn: Connection, *, tenant_id: UUID, endpoint_id: UUID, secret: str, previous_until: datetime
) -> EndpointRow | None:
    """The current secret becomes the previous one (an older previous one is dropped)."""
    async with conn.cursor(row_factory=class_row(EndpointRow)) as cur:
        await cur.execute(
            f"""UPDATE webhook_endpoints SET
                    previous_secret = secret, previous_secret_until = %s, secret = %s,
                    updated_at = now()
                WHERE tenant_id = %s AND endpoint_id = %s AND deleted_at IS NULL
                RETURNING {_ENDPOINT_COLUMNS}""",
            (previous_until, secret, tenant_id, endpoint_id),
        )
        return await cur.fetchone()


async def delete_endpoint(conn: Connection, *, tenant_id: UUID, endpoint_id: UUID) -> bool:
    """Wipe the secrets and cancel what was queued; the delivery log stays."""
    cur = await conn.execute(
        """UPDATE webhook_endpoints SET
               deleted_at = now(), updated_at = now(), enabled = false,
               secret = NULL, previous_secret = NULL, previous_secret_until = NULL
           WHERE tenant_id = %s AND endpoint_id = %s AND deleted_at IS NULL""",
        (tenant_id, endpoint_id),
    )
    if cur.rowcount == 0:
        return False
    await conn.execute(
        """UPDATE webhook_attempts SET status = 'cancelled', error = 'endpoint deleted'
           WHERE endpoint_id = %s AND status = 'pending'""",
        (endpoint_id,),
    )
    return True


# --- Messages -------------------------------------------------------------------------------


async def insert_message(
    conn: Connection,
    *,
    msg_id: str,
    tenant_id: UUID,
    event_type: str,
    event_key: str,
    body: str,
    occurred_at: datetime,
) -> int | None:
    """The new message's id, or None when the tenant already has one with this event key."""
    cur = await conn.execute(
        """INSERT INTO webhook_messages
               (msg_id, tenant_id, event_type, event_key, body, occurred_at)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, event_key) DO NOTHING RETURNING message_id""",
        (msg_id, tenant_id, event_type, event_key, body, occurred_at),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def find_message_id(conn: Connection, *, tenant_id: UUID, event_key: str) -> int | None:
    cur = await conn.execute(
        "SELECT message_id FROM webhook_messages WHERE tenant_id = %s AND event_key = %s",
        (tenant_id, event_key),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def get_message(conn: Connection, *, tenant_id: UUID, msg_id: str) -> MessageRow | None:
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""SELECT {_MESSAGE_COLUMNS} FROM webhook_messages
                WHERE tenant_id = %s AND msg_id = %s""",
            (tenant_id, msg_id),
        )
        return await cur.fetchone()


async def list_messages(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[MessageRow]:
    """The tenant's messages, newest first, after the (created_at, message_id) key."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""SELECT {_MESSAGE_COLUMNS} FROM webhook_messages
                WHERE tenant_id = %(tenant)s
                  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
                  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
                  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
                  AND (%(at)s::timestamptz IS NULL OR (created_at, message_id) < (%(at)s, %(id)s))
                ORDER BY created_at DESC, message_id DESC
                LIMIT %(limit)s""",
            {
                "tenant": tenant_id, "event_type": event_type, "since": since, "until": until,
                "at": after and after[0], "id": after and after[1], "limit": limit,
            },
        )  # fmt: skip
        return await cur.fetchall()


async def delivery_summaries(conn: Connection, message_ids: list[int]) -> list[SummaryRow]:
    """The latest attempt of each (message, endpoint) pair."""
    async with conn.cursor(row_factory=class_row(SummaryRow)) as cur:
        await cur.execute(
            """SELECT DISTINCT ON (message_id, endpoint_id)
                      message_id, endpoint_id, status, attempt_no, sent_at AS last_sent_at,
                      CASE WHEN status = 'pending' THEN due_at END AS next_attempt_at
               FROM webhook_attempts WHERE message_id = ANY(%s)
               ORDER BY message_id, endpoint_id, attempt_id DESC""",
            (message_ids,),
        )
        return await cur.fetchall()


async def list_attempts(
    conn: Connection, message_id: int, *, after: int | None, limit: int
) -> list[AttemptRow]:
    """A message's attempts, oldest first, after the attempt `after`."""
    async with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        await cur.execute(
            f"""SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts
                WHERE message_id = %s AND attempt_id > %s ORDER BY attempt_id LIMIT %s""",
            (message_id, after or 0, limit),
        )
        return await cur.fetchall()


# --- The queue ------------------------------------------------------------------------------


async def schedule_subscribers(
    conn: Connection, *, message_id: int, tenant_id: UUID, event_type: str
) -> int:
    """A first attempt, due now, for each enabled endpoint of the tenant that takes the type."""
    cur = await conn.execute(
        """INSERT INTO webhook_attempts (message_id, endpoint_id, attempt_no, trigger)
           SELECT %s, endpoint_id, 1, 'event' FROM webhook_endpoints
           WHERE tenant_id = %s AND enabled AND deleted_at IS NULL
             AND (cardinality(event_types) = 0 OR %s = ANY(event_types))""",
        (message_id, tenant_id, event_type),
    )
    return cur.rowcount


async def schedule(
    conn: Connection,
    *,
    message_id: int,
    endpoint_id: UUID,
    attempt_no: int,
    trigger: str,
    due_at: datetime | None = None,
) -> int:
    cur = await conn.execute(
        """INSERT INTO webhook_attempts (message_id, endpoint_id, attempt_no, trigger, due_at)
           VALUES (%s, %s, %s, %s, coalesce(%s, now())) RETURNING attempt_id""",
        (message_id, endpoint_id, attempt_no, trigger, due_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def cancel_pending(
    conn: Connection, *, message_id: int, endpoint_id: UUID, reason: str
) -> int:
    cur = await conn.execute(
        """UPDATE webhook_attempts SET status = 'cancelled', error = %s
           WHERE message_id = %s AND endpoint_id = %s AND status = 'pending'""",
        (reason, message_id, endpoint_id),
    )
    return cur.rowcount


async def schedule_failed_since(
    conn: Connection,
    *,
    tenant_id: UUID,
    endpoint_id: UUID,
    since: datetime,
    until: datetime | None,
) -> int:
    """A new chain for each message whose delivery to the endpoint was given up."""
    # A failed attempt that is retried has a later (pending) row: a pair whose latest row
    # failed is one that was given up.
    cur = await conn.execute(
        """INSERT INTO webhook_attempts (message_id, endpoint_id, attempt_no, trigger)
           SELECT latest.message_id, %(endpoint)s, 1, 'replay' FROM (
               SELECT DISTINCT ON (a.message_id) a.message_id, a.status
               FROM webhook_attempts a JOIN webhook_messages m USING (message_id)
               WHERE a.endpoint_id = %(endpoint)s AND m.tenant_id = %(tenant)s
                 AND m.created_at >= %(since)s
                 AND (%(until)s::timestamptz IS NULL OR m.created_at < %(until)s)
               ORDER BY a.message_id, a.attempt_id DESC
           ) AS latest
           WHERE latest.status = 'failed'""",
        {"endpoint": endpoint_id, "tenant": tenant_id, "since": since, "until": until},
    )
    return cur.rowcount


async def claim_due(
    conn: Connection,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    per_endpoint: int | None = None,
    per_tenant: int | None = None,
    busy_endpoints: Mapping[UUID, int] | None = None,
    busy_tenants: Mapping[UUID, int] | None = None,
) -> list[DueAttempt]:
    """Lease up to `limit` due attempts of enabled endpoints to this worker, oldest first, at
    most `per_endpoint` for an endpoint and `per_tenant` for a tenant counting what this
    worker already sends for them (`busy_*`: attempts in flight by endpoint and by tenant).

    The limits are taken per endpoint first (an index probe each, so that a backlog at one
    endpoint is never read whole), then per tenant. SKIP LOCKED lets workers claim side by
    side; the lease (due_at moved to lease_until) keeps others off an attempt after this
    transaction commits, while it is being sent.
    """
    busy_e = dict(busy_endpoints or {})
    busy_t = dict(busy_tenants or {})
    async with conn.cursor(row_factory=class_row(DueAttempt)) as cur:
        await cur.execute(
            """WITH busy_endpoint AS (
                   SELECT * FROM unnest(%(be_ids)s::uuid[], %(be_n)s::int[]) AS b(endpoint_id, n)
               ), busy_tenant AS (
                   SELECT * FROM unnest(%(bt_ids)s::uuid[], %(bt_n)s::int[]) AS b(tenant_id, n)
               ), per_endpoint AS (
                   SELECT e.tenant_id, a.attempt_id, a.due_at
                   FROM webhook_endpoints e
                   LEFT JOIN busy_endpoint be USING (endpoint_id)
                   CROSS JOIN LATERAL (
                       SELECT a.attempt_id, a.due_at FROM webhook_attempts a
                       WHERE a.endpoint_id = e.endpoint_id AND a.status = 'pending'
                         AND a.due_at <= %(now)s
                       ORDER BY a.due_at, a.attempt_id
                       LIMIT greatest(coalesce(%(per_endpoint)s::int - be.n, %(per_endpoint)s::int,
                                               %(limit)s::int), 0)
                   ) a
                   WHERE e.enabled AND e.deleted_at IS NULL
               ), per_tenant AS (
                   SELECT p.attempt_id, p.due_at,
                          row_number() OVER (PARTITION BY p.tenant_id
                                             ORDER BY p.due_at, p.attempt_id)
                            + coalesce(bt.n, 0) AS rank_in_tenant
                   FROM per_endpoint p LEFT JOIN busy_tenant bt USING (tenant_id)
               ), due AS (
                   SELECT a.attempt_id FROM webhook_attempts a
                   WHERE a.attempt_id IN (
                         SELECT attempt_id FROM per_tenant
                         WHERE %(per_tenant)s::int IS NULL OR rank_in_tenant <= %(per_tenant)s::int
                         ORDER BY due_at, attempt_id LIMIT %(limit)s)
                     AND a.status = 'pending' AND a.due_at <= %(now)s
                   FOR UPDATE OF a SKIP LOCKED
               )
               UPDATE webhook_attempts a SET due_at = %(lease_until)s
               FROM due, webhook_endpoints e, webhook_messages m
               WHERE a.attempt_id = due.attempt_id AND e.endpoint_id = a.endpoint_id
                 AND m.message_id = a.message_id
               RETURNING a.attempt_id, a.message_id, a.endpoint_id, e.tenant_id, a.attempt_no,
                         a.trigger, m.msg_id, m.body, e.url, e.secret, e.previous_secret,
                         e.previous_secret_until""",
            {
                "now": now, "lease_until": lease_until, "limit": limit,
                "per_endpoint": per_endpoint, "per_tenant": per_tenant,
                "be_ids": list(busy_e), "be_n": list(busy_e.values()),
                "bt_ids": list(busy_t), "bt_n": list(busy_t.values()),
            },
        )  # fmt: skip
        claimed = await cur.fetchall()
    # UPDATE … RETURNING keeps no order.
    return sorted(claimed, key=lambda a: a.attempt_id)


async def record_attempt(
    conn: Connection,
    *,
    attempt_id: int,
    succeeded: bool,
    sent_at: datetime,
    duration_ms: int,
    status_code: int | None,
    response_excerpt: str | None,
    error: str | None,
) -> bool:
    """Record what a send did; False if the attempt is no longer pending (cancelled by a
    replay or a deletion, or recorded by a worker that took over an expired lease)."""
    cur = await conn.execute(
        """UPDATE webhook_attempts SET
               status = %s, sent_at = %s, duration_ms = %s, status_code = %s,
               response_excerpt = %s, error = %s
           WHERE attempt_id = %s AND status = 'pending'""",
        (
            "succeeded" if succeeded else "failed", sent_at, duration_ms, status_code,
            response_excerpt, error, attempt_id,
        ),
    )  # fmt: skip
    return cur.rowcount == 1


async def queue_depth(conn: Connection, *, now: datetime) -> tuple[int, int]:
    """Pending attempts: (due now, scheduled later)."""
    cur = await conn.execute(
        """SELECT count(*) FILTER (WHERE due_at <= %s), count(*) FILTER (WHERE due_at > %s)
           FROM webhook_attempts WHERE status = 'pending'""",
        (now, now),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def purge_finished(
    conn: Connection, *, created_before: datetime, limit: int
) -> tuple[int, int]:
    """Delete up to `limit` messages created before `created_before` that have no attempt
    still pending, with their attempts; (messages, attempts) deleted."""
    cur = await conn.execute(
        """WITH old AS (
               SELECT m.message_id FROM webhook_messages m
               WHERE m.created_at < %s
                 AND NOT EXISTS (SELECT 1 FROM webhook_attempts a
                                 WHERE a.message_id = m.message_id AND a.status = 'pending')
               ORDER BY m.created_at LIMIT %s
               FOR UPDATE SKIP LOCKED
           ), attempts AS (
               DELETE FROM webhook_attempts a USING old WHERE a.message_id = old.message_id
               RETURNING 1
           ), messages AS (
               DELETE FROM webhook_messages m USING old WHERE m.message_id = old.message_id
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM attempts)""",
        (created_before, limit),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
