"""Errors of webhook endpoints, messages and replays."""

from __future__ import annotations

from flowbill.errors import Conflict, FlowbillError, InvalidInput, NotFound


class InvalidEndpointUrl(InvalidInput):
    type_ = "invalid-webhook-url"
    title = "The webhook URL is not accepted"


class UnknownEventType(InvalidInput):
    type_ = "unknown-event-type"
    title = "No such webhook event type"


class InvalidEvent(InvalidInput):
    type_ = "invalid-webhook-event"
    title = "The event cannot be sent as a webhook"


class EndpointNotFound(NotFound):
    type_ = "webhook-endpoint-not-found"
    title = "Webhook endpoint not found"


class MessageNotFound(NotFound):
    type_ = "webhook-message-not-found"
    title = "Webhook message not found"


class EndpointDisabled(Conflict):
    type_ = "webhook-endpoint-disabled"
    title = "The webhook endpoint is disabled"


class TooManyEndpoints(Conflict):
    type_ = "too-many-webhook-endpoints"
    title = "Too many webhook endpoints"


class DestinationRefused(InvalidEndpointUrl):
    type_ = "webhook-destination-refused"
    title = "Webhooks are not sent there"


class TestEventsLimited(FlowbillError):
    """Too many test events to one endpoint; `retry_after` says when the next one is taken."""

    status = 429
    type_ = "webhook-test-events-limited"
    title = "Too many test events"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after
