"""Late answers for IoT cards: payments (from the payment gateway) and identity checks (from
the identity-check provider), signed with the shared gateway secret. Also the dependencies
the IoT routers share: the IoT gateways' client and where the parties call back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status

from api.deps import ConnDep, GatewaysDep, PoolDep, SettingsDep, after_response
from flowbill.errors import InvalidInput, Unauthenticated
from flowbill.settings import Settings
from iot_cards import settlement
from iot_cards.gateways import HttpIotGateways
from wallet.gateways import SIGNATURE_HEADER, interpret, verify_callback

router = APIRouter(tags=["gateways"])

PAYMENTS_PATH = "/v1/iot-callbacks/payments"
IDENTITY_PATH = "/v1/iot-callbacks/identity-checks"


async def _iot_gateways(request: Request, settings: SettingsDep) -> HttpIotGateways:
    # One client per API process, made on first use (the app's lifespan belongs to api/app.py).
    gateways: HttpIotGateways | None = getattr(request.app.state, "iot_gateways", None)
    if gateways is None or gateways.base_url != settings.iot_gateway_url:
        gateways = HttpIotGateways(
            settings.iot_gateway_url, timeout_seconds=settings.gateway_timeout_seconds
        )
        request.app.state.iot_gateways = gateways
    return gateways


IotGatewaysDep = Annotated[HttpIotGateways, Depends(_iot_gateways)]


def iot_callback_url(settings: Settings, path: str) -> str | None:
    """Where a party posts its late answer, when this API is reachable to it."""
    return f"{settings.public_url.rstrip('/')}{path}" if settings.public_url else None


class InvalidSignature(Unauthenticated):
    type_ = "invalid-signature"
    title = "The callback's signature does not verify"


async def _verified_payload(request: Request, settings: Settings) -> tuple[bytes, UUID]:
    body = await request.body()
    secret = settings.gateway_callback_secret.get_secret_value()
    if not verify_callback(secret, body, request.headers.get(SIGNATURE_HEADER), now=time.time()):
        raise InvalidSignature("sign callbacks with the shared secret, within five minutes")
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
    background: BackgroundTasks,
) -> Response:
    """The payment gateway reports how an IoT order's payment ended (signed)."""
    body, order_id = await _verified_payload(request, settings)
    result = interpret(200, body, reference_key="payment_ref", status_query=True)
    if await settlement.settle_payment(
        conn, order_id=order_id, result=result, now=datetime.now(UTC)
    ):
        background.add_task(
            after_response,
            settlement.issue_invoices(pool, iot_gateways, order_id=order_id),
            what="iot invoice",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(IDENTITY_PATH, status_code=status.HTTP_204_NO_CONTENT)
async def identity_callback(request: Request, conn: ConnDep, settings: SettingsDep) -> Response:
    """The identity-check provider reports a real-name verification's outcome (signed)."""
    body, verification_id = await _verified_payload(request, settings)
    result = interpret(200, body, reference_key="check_ref", status_query=True)
    await settlement.settle_verification(
        conn, verification_id=verification_id, result=result, now=datetime.now(UTC)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
