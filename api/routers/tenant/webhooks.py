"""Webhooks for sponsors and merchants: endpoints, signing secrets, the messages sent, their
delivery log, replay and test events. See docs/webhooks.md for receiving them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from api.deps import ConnDep, SettingsDep, require_role
from api.params import Cursor, Limit
from flowbill.paging import DEFAULT_LIMIT, Page
from tenants.schemas import Role
from tenants.service import Caller
from webhooks import service
from webhooks.egress import EgressPolicy
from webhooks.errors import TestEventsLimited
from webhooks.schemas import (
    AttemptPublic,
    EndpointCreate,
    EndpointCreated,
    EndpointPublic,
    EndpointUpdate,
    EventType,
    MessagePublic,
    QueuedTestEvent,
    Replay,
    ReplayFailed,
    ReplayStarted,
    SecretRotated,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookCaller = Annotated[Caller, Depends(require_role(Role.SPONSOR, Role.MERCHANT))]


async def _egress(settings: SettingsDep) -> EgressPolicy:
    return EgressPolicy.from_settings(settings)


EgressDep = Annotated[EgressPolicy, Depends(_egress)]
MsgIdPath = Annotated[
    str, Path(pattern=r"^msg_[A-Za-z0-9]{16,64}$", description="The `webhook-id` of a message.")
]


@router.get("/event-types")
async def event_types(
    caller: WebhookCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[EventType]:
    """Every event type a webhook may carry, by name; subscribe an endpoint to some or all of
    them."""
    return service.event_types(limit=limit, cursor=cursor)


@router.post("/endpoints", status_code=status.HTTP_201_CREATED)
async def create_endpoint(
    conn: ConnDep, caller: WebhookCaller, egress: EgressDep, body: EndpointCreate
) -> EndpointCreated:
    """Add an endpoint. The answer holds its signing secret, which is never shown again.

    The URL must be https, and its host must resolve to public addresses only: a URL on a
    loopback, private, shared (CGNAT), link-local or other reserved address is refused
    (`webhook-destination-refused`), now and at every send."""
    return await service.create_endpoint(
        conn, tenant_id=caller.tenant_id, spec=body, now=datetime.now(UTC), egress=egress
    )


@router.get("/endpoints")
async def list_endpoints(
    conn: ConnDep, caller: WebhookCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[EndpointPublic]:
    """Your endpoints, oldest first."""
    return await service.list_endpoints(
        conn, tenant_id=caller.tenant_id, now=datetime.now(UTC), limit=limit, cursor=cursor
    )


@router.get("/endpoints/{endpoint_id}")
async def get_endpoint(conn: ConnDep, caller: WebhookCaller, endpoint_id: UUID) -> EndpointPublic:
    """One of your endpoints."""
    return await service.get_endpoint(
        conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id, now=datetime.now(UTC)
    )


@router.patch("/endpoints/{endpoint_id}")
async def update_endpoint(
    conn: ConnDep, caller: WebhookCaller, egress: EgressDep, endpoint_id: UUID, body: EndpointUpdate
) -> EndpointPublic:
    """Change an endpoint's URL (checked as when it was added), description, event types, or
    enable or disable it."""
    return await service.update_endpoint(
        conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id, spec=body,
        now=datetime.now(UTC), egress=egress,
    )  # fmt: skip


@router.delete("/endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(conn: ConnDep, caller: WebhookCaller, endpoint_id: UUID) -> Response:
    """Delete an endpoint: what it had queued is cancelled; its delivery log stays readable."""
    await service.delete_endpoint(conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/endpoints/{endpoint_id}/secret/rotate")
async def rotate_secret(conn: ConnDep, caller: WebhookCaller, endpoint_id: UUID) -> SecretRotated:
    """A new signing secret (shown once). For 24 hours every webhook carries a signature by
    the old secret too, so that you can switch your receiver over without losing any."""
    return await service.rotate_secret(
        conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id, now=datetime.now(UTC)
    )


@router.post(
    "/endpoints/{endpoint_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=QueuedTestEvent,
    responses={429: {"description": "Too many test events to this endpoint this minute."}},
)
async def send_test(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    caller: WebhookCaller,
    endpoint_id: UUID,
) -> QueuedTestEvent | JSONResponse:
    """Send a `webhook.test` event to this endpoint (whatever event types it takes). An
    endpoint takes a few test events a minute; more are refused with 429 and `Retry-After`."""
    try:
        msg_id = await service.send_test(
            conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id, now=datetime.now(UTC),
            per_minute=settings.webhook_test_events_per_minute,
        )  # fmt: skip
    except TestEventsLimited as limited:
        # The one problem handler sets no headers but WWW-Authenticate; this one needs
        # Retry-After.
        return JSONResponse(
            limited.problem(instance=request.url.path), status_code=limited.status,
            media_type="application/problem+json",
            headers={"Retry-After": str(limited.retry_after)},
        )  # fmt: skip
    return QueuedTestEvent(msg_id=msg_id)


@router.post("/endpoints/{endpoint_id}/replay-failed", status_code=status.HTTP_202_ACCEPTED)
async def replay_failed(
    conn: ConnDep, caller: WebhookCaller, endpoint_id: UUID, body: ReplayFailed
) -> ReplayStarted:
    """Send again every message created since a time whose delivery to this endpoint failed
    after its last retry: after an outage, to catch up."""
    queued = await service.replay_failed(
        conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id, since=body.since,
        until=body.until,
    )  # fmt: skip
    return ReplayStarted(messages=queued)


@router.get("/messages")
async def list_messages(
    conn: ConnDep,
    caller: WebhookCaller,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[datetime | None, Query(description="Created at or after.")] = None,
    until: Annotated[datetime | None, Query(description="Created before.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[MessagePublic]:
    """Messages sent to you, newest first, with where each stands at each endpoint."""
    return await service.list_messages(
        conn, tenant_id=caller.tenant_id, event_type=event_type, since=since, until=until,
        limit=limit, cursor=cursor,
    )  # fmt: skip


@router.get("/messages/{msg_id}")
async def get_message(conn: ConnDep, caller: WebhookCaller, msg_id: MsgIdPath) -> MessagePublic:
    """One message: its body as sent, and where it stands at each endpoint."""
    return await service.get_message(conn, tenant_id=caller.tenant_id, msg_id=msg_id)


@router.get("/messages/{msg_id}/attempts")
async def list_attempts(
    conn: ConnDep,
    caller: WebhookCaller,
    msg_id: MsgIdPath,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AttemptPublic]:
    """The delivery log of a message, oldest first: every attempt, with the status code, an
    excerpt of the response, the duration or the error, and when the next retry is due."""
    return await service.list_attempts(
        conn, tenant_id=caller.tenant_id, msg_id=msg_id, limit=limit, cursor=cursor
    )


@router.post("/messages/{msg_id}/replay", status_code=status.HTTP_202_ACCEPTED)
async def replay(
    conn: ConnDep, caller: WebhookCaller, msg_id: MsgIdPath, body: Replay
) -> ReplayStarted:
    """Send a message to an endpoint again, now, with a fresh retry schedule. A retry of it
    still waiting for that endpoint is replaced."""
    await service.replay(
        conn, tenant_id=caller.tenant_id, msg_id=msg_id, endpoint_id=body.endpoint_id
    )
    return ReplayStarted(messages=1)
