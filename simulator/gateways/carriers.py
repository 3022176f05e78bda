"""The carriers' endpoints: data packages topped up onto a number, and a subscriber's unused
in-plan data transferred out to Flowbill — only after the subscriber typed the one-time code the
carrier texted to the line (`transfer-consents`)."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from simulator.gateways.parties import _Decision, _Parties
from simulator.gateways.schemas import (
    ConsentRequest,
    ConsentVerification,
    TopUpRequest,
    TransferRequest,
)

CARRIER_ID = re.compile(r"^[a-z0-9-]{2,40}$")
MSISDN = re.compile(r"^1[3-9]\d{9}$")
PACKAGES_MB = (10, 30, 50, 100, 200, 500, 1024)


def mask_msisdn(msisdn: str) -> str:
    """A phone number as logs may show it: the first 3 and last 4 digits at most."""
    if len(msisdn) < 11:
        return "****"
    return f"{msisdn[:3]}****{msisdn[-4:]}"


def _number_refusal(msisdn: str) -> _Decision | None:
    return None if MSISDN.fullmatch(msisdn) else _Decision("failed", reason="invalid_number")


def _unknown_carrier(carrier: str) -> JSONResponse | None:
    if CARRIER_ID.fullmatch(carrier):
        return None
    return JSONResponse({"status": "failed", "reason": "unknown_carrier"}, status_code=404)


def carrier_routes(parties: _Parties) -> APIRouter:
    """Top-ups and transfers, and where each stands."""
    router = APIRouter()

    @router.post("/carriers/{carrier}/top-ups")
    async def submit_top_up(carrier: str, request: TopUpRequest) -> JSONResponse:
        """Put a standard data package on a phone number."""
        if (unknown := _unknown_carrier(carrier)) is not None:
            return unknown
        refusal = _number_refusal(request.msisdn)
        if refusal is None and request.package_mb not in PACKAGES_MB:
            refusal = _Decision("failed", reason="package_not_offered")
        return await parties.submit(
            kind="top_up",
            scope={"carrier": carrier},
            request=request,
            reference_key="carrier_ref",
            callback_url=request.callback_url,
            refusal=refusal,
            apply=lambda: parties.top_up(carrier, request),
            may_pend=True,
            log_extra={"msisdn": mask_msisdn(request.msisdn), "mb": request.package_mb},
        )

    @router.get("/carriers/{carrier}/top-ups/{request_id}")
    async def top_up_status(carrier: str, request_id: str) -> JSONResponse:
        """Where a top-up stands; 404 if the carrier never received it."""
        return await parties.status(
            kind="top_up", scope={"carrier": carrier}, request_id=request_id
        )

    @router.post("/carriers/{carrier}/transfer-consents")
    async def request_consent(carrier: str, request: ConsentRequest) -> JSONResponse:
        """Text the line a one-time code for moving `mb` MB out of its plan (202: waiting for
        the subscriber). The code reaches only the phone (`/_simulator/phones/.../messages`)."""
        if (unknown := _unknown_carrier(carrier)) is not None:
            return unknown
        refusal = _number_refusal(request.msisdn)
        if refusal is None and request.mb <= 0:
            refusal = _Decision("failed", reason="invalid_amount")
        return await parties.submit(
            kind="consent",
            scope={"carrier": carrier},
            request=request,
            reference_key="consent_ref",
            callback_url=None,
            refusal=refusal,
            apply=lambda: parties.send_consent_code(carrier, request),
            may_pend=False,
            log_extra={"msisdn": mask_msisdn(request.msisdn), "mb": request.mb},
        )

    @router.post("/carriers/{carrier}/transfer-consents/{request_id}/verification")
    async def verify_consent(
        carrier: str, request_id: str, verification: ConsentVerification
    ) -> JSONResponse:
        """Whether the code typed is the one texted: 200 confirmed, or 422 failed with
        wrong_code, code_expired or too_many_attempts (after five tries); 404 if never sent."""
        if (unknown := _unknown_carrier(carrier)) is not None:
            return unknown
        return await parties.verify_consent(carrier, request_id, verification.code)

    @router.post("/carriers/{carrier}/transfers")
    async def submit_transfer(carrier: str, request: TransferRequest) -> JSONResponse:
        """Move the unused in-plan data of the line that consented under this request id."""
        if (unknown := _unknown_carrier(carrier)) is not None:
            return unknown
        refusal = (
            _Decision("failed", reason="invalid_amount")
            if request.mb <= 0
            else parties.consent_refusal(carrier, request)
        )
        return await parties.submit(
            kind="transfer",
            scope={"carrier": carrier},
            request=request,
            reference_key="carrier_ref",
            callback_url=None,
            refusal=refusal,
            apply=lambda: parties.transfer(carrier, request),
            may_pend=True,
            log_extra={"mb": request.mb},
        )

    @router.get("/carriers/{carrier}/transfers/{request_id}")
    async def transfer_status(carrier: str, request_id: str) -> JSONResponse:
        """Where a transfer stands; 404 if the carrier never received it."""
        return await parties.status(
            kind="transfer", scope={"carrier": carrier}, request_id=request_id
        )

    return router
