"""Late answers for IoT cards: payments (from the payment gateway) and identity checks (from
the identity-check provider), each signed with its party's own secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from api.deps import (
    IDENTITY_PATH,
    PAYMENTS_PATH,
    CalendarDep,
    ConnDep,
    GatewaysDep,
    IotGatewaysDep,
    PoolDep,
    SettingsDep,
    after_response,
)
from api.routers.callbacks.signatures import verified_body
from flowbill.errors import InvalidInput
from flowbill.settings import CallbackParty, Settings
from iot_cards import settlement
from wallet.gateways import interpret

router = APIRouter(tags=["gateways"])


async def _verified_payload(
    request: Request, settings: Settings, *, party: CallbackParty
) -> tuple[bytes, UUID]:
    body = await verified_body(request, settings, party=party)
    try:
        request_id = UUID(str(json.loads(body)["request_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("a callback is JSON with the request_id") from exc
    return body, request_id


@router.post(PAYMENTS_PATH, status_code=status.HTTP_204_NO_CONTENT)
async def payment_callback(
    request: Request,
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    iot_gateways: IotGatewaysDep,
    settings: SettingsDep,
    calendar: CalendarDep,
    background: BackgroundTasks,
) -> Response:
    """The payment gateway reports how an IoT order's payment ended (signed)."""
    body, order_id = await _verified_payload(request, settings, party="payment")
    result = interpret(200, body, reference_key="payment_ref", status_query=True)
    if await settlement.settle_payment(
        conn, order_id=order_id, result=result, now=datetime.now(UTC), calendar=calendar
    ):
        background.add_task(
            after_response,
            settlement.issue_invoices(pool, iot_gateways, order_id=order_id, calendar=calendar),
            what="iot invoice",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(IDENTITY_PATH, status_code=status.HTTP_204_NO_CONTENT)
async def identity_callback(request: Request, conn: ConnDep, settings: SettingsDep) -> Response:
    """The identity-check provider reports a real-name verification's outcome (signed)."""
    body, verification_id = await _verified_payload(request, settings, party="identity")
    result = interpret(200, body, reference_key="check_ref", status_query=True)
    await settlement.settle_verification(
        conn, verification_id=verification_id, result=result, now=datetime.now(UTC)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
