"""The parties outside Flowbill that IoT cards depend on: the identity-check provider (real-name
verification, asynchronous: it answers later by a signed callback) and the tax authority's
invoicing service (it assigns each electronic invoice its 20-digit number). Payments go through
the wallet's payment adapter (`wallet.gateways.PaymentGateway`): one way to charge and refund.

Outcomes follow `wallet.gateways`: a timeout, a 5xx or an unreadable answer is UNKNOWN, and the
request is settled later by asking its status under the same request id, which the parties
treat as an idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

from wallet.gateways import GatewayResult, HttpGateways


class IdentityGateway(Protocol):
    async def submit_identity_check(
        self, *, request_id: str, name: str, id_number: str, phone: str, callback_url: str | None
    ) -> GatewayResult:
        """Ask whether the name, resident ID number and phone belong to one real person.
        PENDING first; the answer comes by callback (or `identity_check_status`)."""
        ...

    async def identity_check_status(self, *, request_id: str) -> GatewayResult:
        """Where a check stands; FAILED with reason "not_received" if never seen."""
        ...


class InvoiceGateway(Protocol):
    async def issue_invoice(
        self, *, request_id: str, document: Mapping[str, object]
    ) -> GatewayResult:
        """Issue an electronic invoice; detail has "invoice_number" and "issued_at"."""
        ...

    async def invoice_status(self, *, request_id: str) -> GatewayResult:
        """Where an invoice stands; FAILED with reason "not_received" if never seen."""
        ...


class HttpIotGateways(HttpGateways):
    """The identity-check provider and the invoicing service over HTTP: the wallet's HTTP
    adapter (one connection pool, one way of reading answers, the same metrics and logs,
    which carry ids and outcomes only, never a request's body) with their operations."""

    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        super().__init__(base_url, timeout_seconds=timeout_seconds)
        self.base_url = base_url

    async def submit_identity_check(
        self, *, request_id: str, name: str, id_number: str, phone: str, callback_url: str | None
    ) -> GatewayResult:
        return await self._call(
            "POST",
            "/identity-checks",
            operation="identity_check",
            request_id=request_id,
            reference_key="check_ref",
            body={
                "request_id": request_id,
                "name": name,
                "id_number": id_number,
                "phone": phone,
                "callback_url": callback_url,
            },
        )

    async def identity_check_status(self, *, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/identity-checks/{quote(request_id, safe='')}",
            operation="identity_check_status",
            request_id=request_id,
            reference_key="check_ref",
        )

    async def issue_invoice(
        self, *, request_id: str, document: Mapping[str, object]
    ) -> GatewayResult:
        return await self._call(
            "POST",
            "/invoices",
            operation="invoice",
            request_id=request_id,
            reference_key="invoice_number",
            body={"request_id": request_id, **document},
        )

    async def invoice_status(self, *, request_id: str) -> GatewayResult:
        return await self._call(
            "GET",
            f"/invoices/{quote(request_id, safe='')}",
            operation="invoice_status",
            request_id=request_id,
            reference_key="invoice_number",
        )
