"""The parties outside Flowbill the wallet depends on: carriers, a payment provider, a fulfilment
provider; and their HTTP adapter.

A request to a party ends in one of four outcomes. The one that matters is UNKNOWN: a timeout,
a dropped connection, a 5xx or an answer we cannot read says nothing about whether the party
applied the request. The caller must then keep its hold (never pay out, never refund) and settle
the request later by asking its status under the same request id, which the parties treat as an
idempotency key: resubmitting it never applies a request twice. That is how a timeout neither
loses data nor pays twice.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self
from urllib.parse import quote

import httpx

from flowbill import metrics
from flowbill.settings import CallbackParty

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Flowbill-Gateway-Signature"

# Which party sends each kind of callback, so which secret signs it: a callback verified with
# one party's secret can only settle that party's kind of request.
CALLBACK_PARTY: Mapping[str, CallbackParty] = {
    "top_up": "carrier",
    "transfer": "carrier",
    "payment": "payment",
    "refund": "payment",
    "fulfilment": "fulfilment",
    "identity_check": "identity",
}


class Outcome(enum.StrEnum):
    CONFIRMED = "confirmed"
    FAILED = "failed"
    PENDING = "pending"
    # The request may or may not have been applied: ask its status later.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class GatewayResult:
    outcome: Outcome
    reason: str | None = None
    reference: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


class CarrierGateway(Protocol):
    async def submit_top_up(
        self,
        *,
        carrier: str,
        request_id: str,
        msisdn: str,
        package_mb: int,
        callback_url: str | None,
    ) -> GatewayResult:
        """Ask the carrier to put a standard data package on a phone number."""
        ...

    async def top_up_status(self, *, carrier: str, request_id: str) -> GatewayResult:
        """Where a top-up stands; FAILED with reason "not_received" if the carrier never saw it."""
        ...

    async def request_transfer_consent(
        self, *, carrier: str, request_id: str, msisdn: str, mb: int
    ) -> GatewayResult:
        """Have the carrier text a one-time code to the line, for the subscriber to consent to
        moving `mb` MB out of their plan; PENDING once sent. Only the line sees the code."""
        ...

    async def verify_transfer_consent(
        self, *, carrier: str, request_id: str, code: str
    ) -> GatewayResult:
        """CONFIRMED if `code` is the one the line received; FAILED with reason "wrong_code",
        "code_expired", "too_many_attempts" or "consent_not_found" otherwise."""
        ...

    async def submit_transfer_in(self, *, carrier: str, request_id: str, mb: int) -> GatewayResult:
        """Move unused in-plan data out to us, from the line whose subscriber consented under
        this request id; detail has "mb" and "validity_days"."""
        ...

    async def transfer_status(self, *, carrier: str, request_id: str) -> GatewayResult:
        """Where a transfer stands; FAILED with reason "not_received" if never seen."""
        ...


class PaymentGateway(Protocol):
    async def charge(
        self, *, request_id: str, amount_minor: int, currency: str, callback_url: str | None
    ) -> GatewayResult:
        """Capture a payment; the request id is also the payment's id for refunds."""
        ...

    async def charge_status(self, *, request_id: str) -> GatewayResult:
        """Where a charge stands; FAILED with reason "not_received" if never seen."""
        ...

    async def refund(self, *, payment_id: str, request_id: str, amount_minor: int) -> GatewayResult:
        """Refund part or all of a captured payment; never more than is left of it."""
        ...

    async def refund_status(self, *, payment_id: str, request_id: str) -> GatewayResult:
        """Where a refund stands; FAILED with reason "not_received" if never seen."""
        ...


class FulfilmentGateway(Protocol):
    async def fulfil(
        self,
        *,
        request_id: str,
        item_kind: str,
        sku: str,
        quantity: int,
        recipient_ref: str,
        callback_url: str | None,
    ) -> GatewayResult:
        """Deliver exchange goods; detail has the "voucher" when confirmed."""
        ...

    async def fulfilment_status(self, *, request_id: str) -> GatewayResult:
        """Where a delivery stands; FAILED with reason "not_received" if never seen."""
        ...


_STATUS_OUTCOMES = {
    "confirmed": Outcome.CONFIRMED,
    "pending": Outcome.PENDING,
    "failed": Outcome.FAILED,
}
# Fields that say what the answer is, rather than describe the thing it is about.
_ENVELOPE = frozenset({"status", "reason"})


class HttpGateways:
    """All three parties over HTTP, through one connection pool.

    Use it as an async context manager, or call `aclose` when done.
    """

    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_seconds)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def submit_top_up(
        self,
        *,
        carrier: str,
        request_id: str,
        msisdn: str,
        package_mb: int,
        callback_url: str | None,
    ) -> GatewayResult:
        return await self._call(
            "POST",
            f"/carriers/{_segment(carrier)}/top-ups",
            operation="top_up",
            request_id=request_id,
            reference_key="carrier_ref",
            body={
                "request_id": request_id,
                "msisdn": msisdn,
                "package_mb": package_mb,
                "callback_url": callback_url,
            },
        )

    async def top_up_status(self, *, carrier: str, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/carriers/{_segment(carrier)}/top-ups/{_segment(request_id)}",
            operation="top_up_status",
            request_id=request_id,
            reference_key="carrier_ref",
        )

    async def request_transfer_consent(
        self, *, carrier: str, request_id: str, msisdn: str, mb: int
    ) -> GatewayResult:
        return await self._call(
            "POST",
            f"/carriers/{_segment(carrier)}/transfer-consents",
            operation="transfer_consent",
            request_id=request_id,
            reference_key="consent_ref",
            body={"request_id": request_id, "msisdn": msisdn, "mb": mb},
        )

    async def verify_transfer_consent(
        self, *, carrier: str, request_id: str, code: str
    ) -> GatewayResult:
        return await self._call(
            "POST",
            f"/carriers/{_segment(carrier)}/transfer-consents/{_segment(request_id)}/verification",
            operation="transfer_consent_verification",
            request_id=request_id,
            reference_key="consent_ref",
            body={"code": code},
        )

    async def submit_transfer_in(self, *, carrier: str, request_id: str, mb: int) -> GatewayResult:
        return await self._call(
            "POST",
            f"/carriers/{_segment(carrier)}/transfers",
            operation="transfer",
            request_id=request_id,
            reference_key="carrier_ref",
            body={"request_id": request_id, "mb": mb},
        )

    async def transfer_status(self, *, carrier: str, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/carriers/{_segment(carrier)}/transfers/{_segment(request_id)}",
            operation="transfer_status",
            request_id=request_id,
            reference_key="carrier_ref",
        )

    async def charge(
        self, *, request_id: str, amount_minor: int, currency: str, callback_url: str | None
    ) -> GatewayResult:
        return await self._call(
            "POST",
            "/payments",
            operation="charge",
            request_id=request_id,
            reference_key="payment_ref",
            body={
                "request_id": request_id,
                "amount_minor": amount_minor,
                "currency": currency,
                "callback_url": callback_url,
            },
        )

    async def charge_status(self, *, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/payments/{_segment(request_id)}",
            operation="charge_status",
            request_id=request_id,
            reference_key="payment_ref",
        )

    async def refund(self, *, payment_id: str, request_id: str, amount_minor: int) -> GatewayResult:
        return await self._call(
            "POST",
            f"/payments/{_segment(payment_id)}/refunds",
            operation="refund",
            request_id=request_id,
            reference_key="refund_ref",
            body={"request_id": request_id, "amount_minor": amount_minor},
        )

    async def refund_status(self, *, payment_id: str, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/payments/{_segment(payment_id)}/refunds/{_segment(request_id)}",
            operation="refund_status",
            request_id=request_id,
            reference_key="refund_ref",
        )

    async def fulfil(
        self,
        *,
        request_id: str,
        item_kind: str,
        sku: str,
        quantity: int,
        recipient_ref: str,
        callback_url: str | None,
    ) -> GatewayResult:
        return await self._call(
            "POST",
            "/fulfilments",
            operation="fulfil",
            request_id=request_id,
            reference_key="fulfilment_ref",
            body={
                "request_id": request_id,
                "item_kind": item_kind,
                "sku": sku,
                "quantity": quantity,
                "recipient_ref": recipient_ref,
                "callback_url": callback_url,
            },
        )

    async def fulfilment_status(self, *, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/fulfilments/{_segment(request_id)}",
            operation="fulfilment_status",
            request_id=request_id,
            reference_key="fulfilment_ref",
        )

    async def _call(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        operation: str,
        request_id: str,
        reference_key: str,
        body: Mapping[str, object] | None = None,
    ) -> GatewayResult:
        started = time.perf_counter()
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.TimeoutException:
            result = GatewayResult(Outcome.UNKNOWN, reason="timeout")
        except httpx.TransportError as exc:
            # Even a refused connection is UNKNOWN: a proxy or a retry below us may have sent it.
            result = GatewayResult(
                Outcome.UNKNOWN, reason="transport_error", detail={"error": type(exc).__name__}
            )
        else:
            result = interpret(
                response.status_code,
                response.content,
                reference_key=reference_key,
                status_query=method == "GET",
            )
        metrics.GATEWAY_REQUESTS.labels(operation, result.outcome.value).inc()
        metrics.GATEWAY_REQUEST_SECONDS.labels(operation).observe(time.perf_counter() - started)
        level = logging.WARNING if result.outcome is Outcome.UNKNOWN else logging.INFO
        log.log(
            level,
            "gateway answered",
            extra={
                "operation": operation,
                "request_id": request_id,
                "outcome": result.outcome.value,
                "reason": result.reason,
            },
        )
        return result


def interpret(
    status_code: int, content: bytes, *, reference_key: str, status_query: bool
) -> GatewayResult:
    """What a party's answer means for the request; anything unclear is UNKNOWN."""
    if status_code >= 500:
        return GatewayResult(
            Outcome.UNKNOWN, reason=f"http_{status_code}", detail={"http_status": status_code}
        )
    if status_query and status_code == 404:
        return GatewayResult(Outcome.FAILED, reason="not_received")
    if status_code == 409:
        # Another request under this id was applied, or may have been: never compensate for
        # it as if nothing happened; ask its status instead.
        return GatewayResult(Outcome.UNKNOWN, reason="request_id_conflict")
    try:
        parsed: object = json.loads(content)
    except ValueError:
        parsed = None
    document: dict[str, object] = (
        {key: value for key, value in parsed.items() if isinstance(key, str)}
        if isinstance(parsed, dict)
        else {}
    )
    status = document.get("status")
    outcome: Outcome | None = None
    if status_code == 202:
        # Accepted, to be settled later: that much holds whatever the body says.
        outcome = Outcome.PENDING
    elif status_code == 200 and isinstance(status, str):
        # A status query reports any state with 200; a submission only a confirmed one.
        outcome = _STATUS_OUTCOMES.get(status)
        if not status_query and outcome is not Outcome.CONFIRMED:
            outcome = None
    elif 400 <= status_code < 500 and status == "failed":
        outcome = Outcome.FAILED
    if outcome is None:
        return GatewayResult(
            Outcome.UNKNOWN, reason="unparseable_response", detail={"http_status": status_code}
        )
    reason = document.get("reason")
    reference = document.get(reference_key)
    return GatewayResult(
        outcome,
        reason=reason if isinstance(reason, str) and outcome is Outcome.FAILED else None,
        reference=reference if isinstance(reference, str) else None,
        detail={key: value for key, value in document.items() if key not in _ENVELOPE},
    )


def sign_callback(secret: str, body: bytes, *, now: float) -> str:
    """The signature header value for a callback body sent at `now` (unix seconds)."""
    timestamp = int(now)
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_callback(
    secrets: tuple[str, ...],
    body: bytes,
    header: str | None,
    *,
    now: float,
    tolerance_seconds: int = 300,
) -> bool:
    """Whether a callback was signed with one of `secrets` (one party's current and previous
    secret) over this exact body, recently enough.

    The timestamp is signed too, so an old callback cannot be replayed with a fresh one.
    """
    if not header:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures or abs(now - timestamp) > tolerance_seconds:
        return False
    # Every candidate is compared, so the time taken does not reveal which one matched.
    matches = [
        hmac.compare_digest(_mac(secret, timestamp, body).encode(), given.encode())
        for secret in secrets
        for given in signatures
    ]
    return any(matches)


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _segment(value: str) -> str:
    """A path segment: an id holding "/" or "?" must not reach another resource."""
    return quote(value, safe="")
