"""Webhooks for every tenant: endpoints, exactly-once messages, the delivery log, replay.

Domains call `enqueue` inside their own transaction when an event happens; `webhooks.delivery`
sends what is due, signed per the Standard Webhooks spec (docs/webhooks.md).
"""

from __future__ import annotations

import ipaddress
import json
import math
import secrets
import string
from collections import defaultdict
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from urllib.parse import urlsplit
from uuid import UUID

import httpx

from flowbill import paging
from flowbill.db import Connection
from flowbill.errors import InvalidInput
from flowbill.paging import Page
from webhooks import repository, signing
from webhooks.egress import EgressPolicy, EgressRefused, HostNotFound
from webhooks.errors import (
    DestinationRefused,
    EndpointDisabled,
    EndpointNotFound,
    InvalidEndpointUrl,
    InvalidEvent,
    MessageNotFound,
    TestEventsLimited,
    TooManyEndpoints,
    UnknownEventType,
)
from webhooks.repository import EndpointRow, MessageRow
from webhooks.schemas import (
    EVENT_TYPE_NAMES,
    EVENT_TYPES,
    MAX_URL_LENGTH,
    TEST_EVENT,
    AttemptPublic,
    DeliverySummary,
    EndpointCreate,
    EndpointCreated,
    EndpointPublic,
    EndpointUpdate,
    EventType,
    MessagePublic,
    SecretRotated,
)

# The old secret keeps signing this long after a rotation, so receivers can switch over.
ROTATION_OVERLAP = timedelta(hours=24)
MAX_ENDPOINTS_PER_TENANT = 50
# The spec recommends bodies well under 20 kB; this is a hard stop, not a target.
MAX_BODY_BYTES = 65536
MAX_EVENT_KEY_LENGTH = 300
_MINUTE = timedelta(minutes=1)
_MSG_ID_ALPHABET = string.ascii_letters + string.digits


def new_msg_id() -> str:
    """`msg_` and 27 random letters and digits (160 bits); never a `.` (the spec forbids it)."""
    return "msg_" + "".join(secrets.choice(_MSG_ID_ALPHABET) for _ in range(27))


def check_url(url: str) -> str:
    """The URL if webhooks may be sent to it; raises InvalidEndpointUrl saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidEndpointUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidEndpointUrl("the URL is empty or holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidEndpointUrl("the URL cannot be parsed") from None
    if parts.scheme not in {"http", "https"}:
        raise InvalidEndpointUrl("the URL must start with https:// (or http://)")
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpointUrl(
            "credentials in a URL leak into logs: verify our signature instead"
        )
    if not parts.hostname:
        raise InvalidEndpointUrl("the URL has no host")
    if port == 0:
        raise InvalidEndpointUrl("the URL's port is not valid")
    if parts.fragment:
        raise InvalidEndpointUrl("the URL has a #fragment, which is never sent to a server")
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(label and len(label) <= 63 for label in host.rstrip(".").split(".")):
            raise InvalidEndpointUrl("the URL's host name is not valid") from None
    return url


async def check_destination(url: str, egress: EgressPolicy) -> str:
    """The URL if webhooks may be sent there now: well formed (`check_url`), https (unless
    development allows http), and a host whose every address is public. Raises
    InvalidEndpointUrl, or DestinationRefused saying why not.

    A name that does not resolve (yet) is taken: every send resolves it again and refuses a
    private address then, so this check is the early answer, not the guard.
    """
    url = check_url(url)
    try:
        parsed = httpx.URL(url)
        egress.check_scheme(parsed.scheme)
        await egress.addresses(parsed.raw_host.decode("ascii"), parsed.port or 443)
    except httpx.InvalidURL:
        raise InvalidEndpointUrl("the URL's host name is not valid") from None
    except EgressRefused as refused:
        raise DestinationRefused(f"webhooks are not sent there: {refused}") from None
    except HostNotFound:
        pass
    return url


def check_event_types(event_types: list[str]) -> list[str]:
    """The filter without repeats, in order; raises UnknownEventType for a type we never send."""
    unknown = sorted({t for t in event_types if t not in EVENT_TYPE_NAMES})
    if unknown:
        raise UnknownEventType(
            f"unknown event types: {', '.join(unknown)}", known=sorted(EVENT_TYPE_NAMES)
        )
    return list(dict.fromkeys(event_types))


def event_types(*, limit: int, cursor: str | None) -> Page[EventType]:
    """Every event type a webhook may carry, by name, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="event-types") if cursor else ("",)
    later = sorted((e for e in EVENT_TYPES if e.event_type > after), key=lambda e: e.event_type)
    return paging.page(
        later[: limit + 1], limit=limit, key=lambda e: (e.event_type,), scope="event-types"
    )


def _public(row: EndpointRow, *, now: datetime) -> EndpointPublic:
    public = EndpointPublic.model_validate(row)
    if row.previous_secret_until is not None and row.previous_secret_until <= now:
        # The rotation is over: the old secret signs no more, though the row keeps its end.
        return public.model_copy(update={"previous_secret_until": None})
    return public


async def _endpoint(conn: Connection, *, tenant_id: UUID, endpoint_id: UUID) -> EndpointRow:
    row = await repository.get_endpoint(conn, tenant_id=tenant_id, endpoint_id=endpoint_id)
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return row


async def create_endpoint(
    conn: Connection,
    *,
    tenant_id: UUID,
    spec: EndpointCreate,
    now: datetime,
    egress: EgressPolicy,
) -> EndpointCreated:
    """A new endpoint with a new signing secret, shown in this answer only."""
    url = await check_destination(spec.url, egress)
    wanted = check_event_types(spec.event_types)
    if await repository.count_endpoints(conn, tenant_id) >= MAX_ENDPOINTS_PER_TENANT:
        raise TooManyEndpoints(f"a tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints")
    secret = signing.generate_secret()
    row = await repository.insert_endpoint(
        conn, tenant_id=tenant_id, url=url, description=spec.description, event_types=wanted,
        enabled=spec.enabled, secret=secret,
    )  # fmt: skip
    return EndpointCreated(**_public(row, now=now).model_dump(), secret=secret)


async def list_endpoints(
    conn: Connection, *, tenant_id: UUID, now: datetime, limit: int, cursor: str | None
) -> Page[EndpointPublic]:
    """The tenant's endpoints, oldest first, a page at a time."""
    after = paging.decode_cursor(cursor, (datetime, UUID), scope="endpoints") if cursor else None
    rows = await repository.list_endpoints(conn, tenant_id, after=after, limit=limit + 1)
    return paging.page(
        [_public(row, now=now) for row in rows],
        limit=limit, key=lambda e: (e.created_at, e.endpoint_id), scope="endpoints",
    )  # fmt: skip


async def get_endpoint(
    conn: Connection, *, tenant_id: UUID, endpoint_id: UUID, now: datetime
) -> EndpointPublic:
    """One of the tenant's endpoints."""
    return _public(await _endpoint(conn, tenant_id=tenant_id, endpoint_id=endpoint_id), now=now)


async def update_endpoint(
    conn: Connection,
    *,
    tenant_id: UUID,
    endpoint_id: UUID,
    spec: EndpointUpdate,
    now: datetime,
    egress: EgressPolicy,
) -> EndpointPublic:
    """Change an endpoint's URL, description, event filter or whether it is enabled."""
    row = await repository.update_endpoint(
        conn,
        tenant_id=tenant_id,
        endpoint_id=endpoint_id,
        url=None if spec.url is None else await check_destination(spec.url, egress),
        description=spec.description,
        event_types=None if spec.event_types is None else check_event_types(spec.event_types),
        enabled=spec.enabled,
    )
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return _public(row, now=now)


async def delete_endpoint(conn: Connection, *, tenant_id: UUID, endpoint_id: UUID) -> None:
    """Delete an endpoint: its queued deliveries are cancelled; its delivery log is kept."""
    if not await repository.delete_endpoint(conn, tenant_id=tenant_id, endpoint_id=endpoint_id):
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")


async def rotate_secret(
    conn: Connection, *, tenant_id: UUID, endpoint_id: UUID, now: datetime
) -> SecretRotated:
    """A new signing secret; the current one also signs for ROTATION_OVERLAP more."""
    secret = signing.generate_secret()
    until = now + ROTATION_OVERLAP
    row = await repository.rotate_secret(
        conn, tenant_id=tenant_id, endpoint_id=endpoint_id, secret=secret, previous_until=until
    )
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return SecretRotated(endpoint_id=endpoint_id, secret=secret, previous_secret_until=until)


# --- Messages -------------------------------------------------------------------------------


def _json_value(value: object) -> object:
    # Flowbill's values as JSON: decimals (prices) as strings, so that no float rounds them.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("a datetime without a time zone")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date | UUID | Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def render_body(*, event_type: str, payload: dict[str, object], occurred_at: datetime) -> str:
    """The exact body sent: `{"type", "timestamp", "data"}` as compact JSON."""
    if occurred_at.tzinfo is None:
        raise InvalidEvent("occurred_at must carry a time zone")
    document = {"type": event_type, "timestamp": _json_value(occurred_at), "data": payload}
    try:
        body = json.dumps(
            document, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
            default=_json_value,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"the payload is not JSON: {exc}") from None
    if len(body.encode()) > MAX_BODY_BYTES:
        raise InvalidEvent(f"the webhook body is larger than {MAX_BODY_BYTES} bytes")
    return body


async def _create_message(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_type: str,
    event_key: str,
    payload: dict[str, object],
    occurred_at: datetime,
) -> tuple[int, str] | None:
    """The new message's (id, msg_id); None if the tenant has one with this event key."""
    if event_type not in EVENT_TYPE_NAMES:
        raise UnknownEventType(
            f"unknown event type {event_type!r}: add it to webhooks.schemas.EVENT_TYPES",
            known=sorted(EVENT_TYPE_NAMES),
        )
    if not 1 <= len(event_key) <= MAX_EVENT_KEY_LENGTH:
        raise InvalidEvent(f"an event key has 1 to {MAX_EVENT_KEY_LENGTH} characters")
    body = render_body(event_type=event_type, payload=payload, occurred_at=occurred_at)
    msg_id = new_msg_id()
    message_id = await repository.insert_message(
        conn, msg_id=msg_id, tenant_id=tenant_id, event_type=event_type,
        event_key=event_key, body=body, occurred_at=occurred_at,
    )  # fmt: skip
    return None if message_id is None else (message_id, msg_id)


async def enqueue(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_type: str,
    event_key: str,
    payload: dict[str, object],
    occurred_at: datetime,
) -> int:
    """Queue an event for the tenant's endpoints, once per (tenant, event_key).

    Runs in the caller's transaction and never commits: the webhook exists if and only if the
    caller's change does. A repeat of an event key returns the first message's id and queues
    nothing. Returns the message's internal id (its public `msg_id` is the webhook-id).
    """
    created = await _create_message(
        conn, tenant_id=tenant_id, event_type=event_type, event_key=event_key,
        payload=payload, occurred_at=occurred_at,
    )  # fmt: skip
    if created is None:
        existing = await repository.find_message_id(conn, tenant_id=tenant_id, event_key=event_key)
        assert existing is not None, "ON CONFLICT saw a row that the lookup cannot"
        return existing
    message_id, _ = created
    await repository.schedule_subscribers(
        conn, message_id=message_id, tenant_id=tenant_id, event_type=event_type
    )
    return message_id


async def send_test(
    conn: Connection, *, tenant_id: UUID, endpoint_id: UUID, now: datetime, per_minute: int
) -> str:
    """Queue a `webhook.test` message to this endpoint alone; returns its msg_id. An endpoint
    takes `per_minute` test events in any minute; more raise TestEventsLimited."""
    # The lock makes concurrent requests for one endpoint count one after the other.
    endpoint = await repository.get_endpoint(
        conn, tenant_id=tenant_id, endpoint_id=endpoint_id, for_update=True
    )
    if endpoint is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    if not endpoint.enabled:
        raise EndpointDisabled("enable the endpoint to send it a test event")
    sent, oldest_age = await repository.recent_tests(conn, endpoint_id=endpoint_id, window=_MINUTE)
    if sent >= per_minute:
        wait = math.ceil((_MINUTE - oldest_age).total_seconds()) if oldest_age else 1
        raise TestEventsLimited(
            f"an endpoint takes {per_minute} test events a minute; try again in {wait} s",
            retry_after=max(wait, 1),
        )
    created = await _create_message(
        conn, tenant_id=tenant_id, event_type=TEST_EVENT,
        event_key=f"{TEST_EVENT}:{secrets.token_hex(16)}",
        payload={"endpoint_id": str(endpoint_id), "note": "A test event from Flowbill."},
        occurred_at=now,
    )  # fmt: skip
    assert created is not None, "a test event's key is random"
    message_id, msg_id = created
    await repository.schedule(
        conn, message_id=message_id, endpoint_id=endpoint_id, attempt_no=1, trigger="test"
    )
    return msg_id


async def _message_by_msg_id(conn: Connection, *, tenant_id: UUID, msg_id: str) -> MessageRow:
    row = await repository.get_message(conn, tenant_id=tenant_id, msg_id=msg_id)
    if row is None:
        raise MessageNotFound(f"no webhook message {msg_id}")
    return row


async def _with_deliveries(conn: Connection, rows: list[MessageRow]) -> list[MessagePublic]:
    summaries = await repository.delivery_summaries(conn, [r.message_id for r in rows])
    by_message: defaultdict[int, list[DeliverySummary]] = defaultdict(list)
    for s in summaries:
        by_message[s.message_id].append(DeliverySummary.model_validate(s))
    # The row's body is the JSON sent; the answer shows it parsed, as `payload`.
    return [
        MessagePublic.model_validate(
            {**asdict(r), "payload": json.loads(r.body), "deliveries": by_message[r.message_id]}
        )
        for r in rows
    ]


async def list_messages(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[MessagePublic]:
    """The tenant's messages, newest first, with where each stands at each endpoint, a page
    at a time."""
    after = paging.decode_cursor(cursor, (datetime, int), scope="messages") if cursor else None
    rows = await repository.list_messages(
        conn, tenant_id=tenant_id, event_type=event_type, since=since, until=until,
        after=after, limit=limit + 1,
    )  # fmt: skip
    found = paging.page(
        rows, limit=limit, key=lambda m: (m.created_at, m.message_id), scope="messages"
    )
    return Page[MessagePublic](
        items=await _with_deliveries(conn, found.items), next_cursor=found.next_cursor
    )


async def get_message(conn: Connection, *, tenant_id: UUID, msg_id: str) -> MessagePublic:
    """One of the tenant's messages."""
    row = await _message_by_msg_id(conn, tenant_id=tenant_id, msg_id=msg_id)
    return (await _with_deliveries(conn, [row]))[0]


async def list_attempts(
    conn: Connection, *, tenant_id: UUID, msg_id: str, limit: int, cursor: str | None
) -> Page[AttemptPublic]:
    """The delivery log of a message: every attempt at every endpoint, oldest first, a page at
    a time."""
    (after,) = paging.decode_cursor(cursor, (int,), scope="attempts") if cursor else (None,)
    message = await _message_by_msg_id(conn, tenant_id=tenant_id, msg_id=msg_id)
    rows = await repository.list_attempts(conn, message.message_id, after=after, limit=limit + 1)
    return paging.page(
        [AttemptPublic.model_validate(a) for a in rows],
        limit=limit, key=lambda a: (a.attempt_id,), scope="attempts",
    )  # fmt: skip


async def _enabled_endpoint(conn: Connection, *, tenant_id: UUID, endpoint_id: UUID) -> EndpointRow:
    endpoint = await _endpoint(conn, tenant_id=tenant_id, endpoint_id=endpoint_id)
    if not endpoint.enabled:
        raise EndpointDisabled("enable the endpoint before replaying to it")
    return endpoint


async def replay(conn: Connection, *, tenant_id: UUID, msg_id: str, endpoint_id: UUID) -> None:
    """Send a message to an endpoint again, now, as a new chain of attempts.

    A delivery of it to that endpoint that is still waiting for a retry is cancelled: the
    replay takes its place, so the endpoint does not receive it twice over.
    """
    message = await _message_by_msg_id(conn, tenant_id=tenant_id, msg_id=msg_id)
    await _enabled_endpoint(conn, tenant_id=tenant_id, endpoint_id=endpoint_id)
    await repository.cancel_pending(
        conn, message_id=message.message_id, endpoint_id=endpoint_id, reason="replaced by a replay"
    )
    await repository.schedule(
        conn, message_id=message.message_id, endpoint_id=endpoint_id, attempt_no=1,
        trigger="replay",
    )  # fmt: skip


async def replay_failed(
    conn: Connection,
    *,
    tenant_id: UUID,
    endpoint_id: UUID,
    since: datetime,
    until: datetime | None,
) -> int:
    """Send again every message created in [since, until) whose delivery to the endpoint was
    given up; returns how many were queued."""
    if until is not None and until <= since:
        raise InvalidInput("`until` must be after `since`")
    await _enabled_endpoint(conn, tenant_id=tenant_id, endpoint_id=endpoint_id)
    return await repository.schedule_failed_since(
        conn, tenant_id=tenant_id, endpoint_id=endpoint_id, since=since, until=until
    )
