"""Late answers from the carrier, payment and fulfilment gateways, signed with a shared secret."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from api.deps import ConnDep, GatewaysDep, PoolDep, SettingsDep, after_response, providers
from flowbill.errors import InvalidInput, Unauthenticated
from wallet import exchange, withdrawals
from wallet.gateways import SIGNATURE_HEADER, interpret, verify_callback

router = APIRouter(tags=["gateways"])

_REFERENCE = {"top_up": "carrier_ref", "transfer": "carrier_ref", "payment": "payment_ref",
              "fulfilment": "fulfilment_ref"}  # fmt: skip


class InvalidSignature(Unauthenticated):
    type_ = "invalid-signature"
    title = "The callback's signature does not verify"


@router.post("/v1/gateway-callbacks", status_code=status.HTTP_204_NO_CONTENT)
async def gateway_callback(
    request: Request,
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> Response:
    """A gateway reports how a request it accepted earlier ended (signed, see docs/api.md)."""
    body = await request.body()
    secret = settings.gateway_callback_secret.get_secret_value()
    if not verify_callback(secret, body, request.headers.get(SIGNATURE_HEADER), now=time.time()):
        raise InvalidSignature("sign callbacks with the shared secret, within five minutes")
    try:
        payload = json.loads(body)
        kind = str(payload["kind"])
        order_id = UUID(str(payload["request_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("a callback is JSON with kind and request_id") from exc
    if kind not in _REFERENCE:
        raise InvalidInput(f"unknown callback kind {kind!r}")
    result = interpret(200, body, reference_key=_REFERENCE[kind], status_query=True)
    now = datetime.now(UTC)
    if kind in {"top_up", "transfer"}:
        await withdrawals.settle(conn, order_id=order_id, result=result, now=now)
    elif kind == "payment":
        await exchange.settle_payment(conn, order_id=order_id, result=result, now=now)
        background.add_task(
            after_response,
            exchange.process(pool, providers(settings, gateways), order_id=order_id, now=now),
            what="exchange order",
        )
    else:
        await exchange.settle_fulfilment(conn, order_id=order_id, result=result, now=now)
        background.add_task(
            after_response,
            exchange.refund_money(pool, providers(settings, gateways), order_id=order_id),
            what="exchange refund",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
