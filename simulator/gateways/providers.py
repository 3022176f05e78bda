"""The payment provider's endpoints (payments and their refunds) and the fulfilment provider's
(exchange goods delivered)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from simulator.gateways.parties import _Decision, _Parties
from simulator.gateways.schemas import FulfilmentRequest, PaymentRequest, RefundRequest

CURRENCIES = frozenset({"CNY"})


def provider_routes(parties: _Parties) -> APIRouter:
    """Payments, refunds and fulfilments, and where each stands."""
    router = APIRouter()

    @router.post("/payments")
    async def charge(request: PaymentRequest) -> JSONResponse:
        """Capture a payment; its request id is the payment id for refunds."""
        refusal = None
        if request.amount_minor <= 0:
            refusal = _Decision("failed", reason="invalid_amount")
        elif request.currency not in CURRENCIES:
            refusal = _Decision("failed", reason="unsupported_currency")
        return await parties.submit(
            kind="payment",
            scope={},
            request=request,
            reference_key="payment_ref",
            callback_url=request.callback_url,
            refusal=refusal,
            apply=lambda: parties.charge(request),
            may_pend=True,
            log_extra={"amount_minor": request.amount_minor},
        )

    @router.get("/payments/{request_id}")
    async def charge_status(request_id: str) -> JSONResponse:
        """Where a payment stands; 404 if the provider never received it."""
        return await parties.status(kind="payment", scope={}, request_id=request_id)

    @router.post("/payments/{payment_id}/refunds")
    async def refund(payment_id: str, request: RefundRequest) -> JSONResponse:
        """Refund part of a captured payment, never more than what is left of it."""
        refusal = None
        if request.amount_minor <= 0:
            refusal = _Decision("failed", reason="invalid_amount")
        return await parties.submit(
            kind="refund",
            scope={"payment_id": payment_id},
            request=request,
            reference_key="refund_ref",
            callback_url=None,
            refusal=refusal,
            apply=lambda: parties.refund(payment_id, request),
            # Refunds are answered at once: there is no callback for them.
            may_pend=False,
            log_extra={"amount_minor": request.amount_minor},
        )

    @router.get("/payments/{payment_id}/refunds/{request_id}")
    async def refund_status(payment_id: str, request_id: str) -> JSONResponse:
        """Where a refund stands; 404 if the provider never received it."""
        return await parties.status(
            kind="refund", scope={"payment_id": payment_id}, request_id=request_id
        )

    @router.post("/fulfilments")
    async def fulfil(request: FulfilmentRequest) -> JSONResponse:
        """Deliver exchange goods (red envelopes, phone credit, memberships)."""
        refusal = None
        if request.quantity <= 0:
            refusal = _Decision("failed", reason="invalid_quantity")
        return await parties.submit(
            kind="fulfilment",
            scope={},
            request=request,
            reference_key="fulfilment_ref",
            callback_url=request.callback_url,
            refusal=refusal,
            apply=lambda: parties.fulfil(request),
            may_pend=True,
            log_extra={"item_kind": request.item_kind, "quantity": request.quantity},
        )

    @router.get("/fulfilments/{request_id}")
    async def fulfilment_status(request_id: str) -> JSONResponse:
        """Where a delivery stands; 404 if the provider never received it."""
        return await parties.status(kind="fulfilment", scope={}, request_id=request_id)

    return router
