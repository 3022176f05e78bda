"""Webhook models at the API's edge, and the catalogue of event types."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class EventType(BaseModel):
    event_type: str
    description: str
    sent_by: str


# Every event type a webhook may carry. A domain that sends a new one adds it here (and to
# docs/webhooks.md): endpoints subscribe by these names, so an unknown one is refused.
EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        event_type="webhook.test",
        description="A test event, sent when you ask for one.",
        sent_by="webhooks",
    ),
    EventType(
        event_type="policy.cap_threshold_reached",
        description="A SIM used a threshold share of a policy's cap this period.",
        sent_by="billing (the allocation run)",
    ),
    EventType(
        event_type="policy.budget_threshold_reached",
        description="A policy spent a threshold share of its budget.",
        sent_by="billing (the allocation run)",
    ),
    EventType(
        event_type="card.usage_threshold_reached",
        description="An IoT card used a threshold share of its plan's data.",
        sent_by="iot_cards",
    ),
)
EVENT_TYPE_NAMES = frozenset(e.event_type for e in EVENT_TYPES)
TEST_EVENT = "webhook.test"

MAX_URL_LENGTH = 2000
MsgId = Annotated[str, StringConstraints(pattern=r"^msg_[A-Za-z0-9]{16,64}$")]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
EventTypeName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
EventTypes = Annotated[
    list[EventTypeName],
    Field(max_length=50, description="Event types to receive; empty: all of them."),
]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Command):
    url: str = Field(
        description=f"Where to POST webhooks: http or https, no credentials in the URL, at most"
        f" {MAX_URL_LENGTH} characters."
    )
    description: Description = ""
    event_types: EventTypes = []
    enabled: bool = True


class EndpointUpdate(_Command):
    """Only the fields sent are changed."""

    url: str | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = Field(
        default=None,
        description="A disabled endpoint receives no new messages; the deliveries it had "
        "queued wait, and resume when it is enabled again.",
    )


class _FromRow(BaseModel):
    """An answer built from a repository row (`model_validate(row)`)."""

    model_config = ConfigDict(from_attributes=True)


class EndpointPublic(_FromRow):
    endpoint_id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None = Field(
        description="After a rotation, the old secret also signs until then."
    )


class EndpointCreated(EndpointPublic):
    secret: str = Field(description="The signing secret (`whsec_…`). Shown once; store it now.")


class SecretRotated(BaseModel):
    endpoint_id: UUID
    secret: str = Field(description="The new signing secret. Shown once; store it now.")
    previous_secret_until: datetime = Field(
        description="Until then, every webhook is also signed by the previous secret."
    )


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliverySummary(_FromRow):
    """Where a message stands at one endpoint: its latest attempt."""

    endpoint_id: UUID
    status: DeliveryStatus
    attempt_no: int
    last_sent_at: datetime | None
    next_attempt_at: datetime | None


class MessagePublic(_FromRow):
    msg_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: str
    event_key: str
    occurred_at: datetime
    created_at: datetime
    payload: dict[str, object] = Field(description="The body sent: type, timestamp and data.")
    deliveries: list[DeliverySummary]


class AttemptPublic(_FromRow):
    attempt_id: int
    endpoint_id: UUID
    attempt_no: int = Field(description="1 for the first try of a chain (a replay starts one).")
    trigger: str = Field(description="event, replay or test.")
    status: DeliveryStatus
    due_at: datetime = Field(description="When it is (or was) due to be sent.")
    sent_at: datetime | None
    duration_ms: int | None
    status_code: int | None
    response_excerpt: str | None
    error: str | None


class Replay(_Command):
    endpoint_id: UUID


class ReplayFailed(_Command):
    since: datetime = Field(description="Replay messages created at or after this time.")
    until: datetime | None = Field(default=None, description="…and before this time.")


class ReplayStarted(BaseModel):
    messages: int = Field(description="How many messages were queued again.")


class QueuedTestEvent(BaseModel):
    msg_id: str
