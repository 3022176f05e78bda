"""Late answers from the carrier, payment and fulfilment gateways, each signed with the secret
of the party that sends its kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from api.deps import ConnDep, GatewaysDep, PoolDep, SettingsDep, after_response, providers
from api.routers.callbacks.signatures import InvalidSignature, verified_body
from flowbill.errors import InvalidInput
from wallet import exchange, withdrawals
from wallet.gateways import CALLBACK_PARTY, interpret

router = APIRouter(tags=["gateways"])

_REFERENCE = {"top_up": "carrier_ref", "transfer": "carrier_ref", "payment": "payment_ref",
              "fulfilment": "fulfilment_ref"}  # fmt: skip


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
    # The kind, read before the signature is checked, only picks whose secret must have
    # signed it; it is part of the signed body, so no other party can claim it.
    try:
        kind = str(json.loads(await request.body())["kind"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidSignature("a callback is signed JSON with its kind") from exc
    if kind not in _REFERENCE:
        raise InvalidSignature(f"no party sends callbacks of kind {kind!r}")
    body = await verified_body(request, settings, party=CALLBACK_PARTY[kind])
    try:
        order_id = UUID(str(json.loads(body)["request_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("a callback is JSON with kind and request_id") from exc
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
