"""Merchant A never sees merchant B's cards, orders, buyers or invoices: 404, not 403."""

from __future__ import annotations

import asyncio

import httpx

from flowbill.settings import Settings
from tests.conftest import assert_problem
from tests.iot_cards.factories import Store, active_card, buyer, idem


async def test_merchants_see_only_their_own(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    a = await Store(http, settings, operator_key).open(cards=1)
    b = await Store(http, settings, operator_key).open(cards=1)
    buyer_id, holder = await buyer(settings)
    iccid, _ = await active_card(http, b, holder)
    order_id = (await http.get("/v1/merchant/iot/orders", headers=b.merchant)).json()["items"][0][
        "order_id"
    ]
    for _ in range(100):
        invoices = (await http.get("/v1/merchant/iot/invoices", headers=b.merchant)).json()["items"]
        if invoices:
            break
        await asyncio.sleep(0.05)
    invoice_id = invoices[0]["invoice_id"]

    for path, problem in (
        (f"/v1/merchant/iot/cards/{iccid}", "card-not-found"),
        (f"/v1/merchant/iot/cards/{iccid}/usage", "card-not-found"),
        (f"/v1/merchant/iot/orders/{order_id}", "iot-order-not-found"),
        (f"/v1/merchant/iot/orders/{order_id}/refund", "iot-order-not-found"),
        (f"/v1/merchant/iot/buyers/{buyer_id}", "buyer-not-found"),
        (f"/v1/merchant/iot/invoices/{invoice_id}", "invoice-not-found"),
        (f"/v1/merchant/iot/invoices/{invoice_id}/pdf", "invoice-not-found"),
    ):
        assert_problem(await http.get(path, headers=a.merchant), 404, problem)
    for path, body in (
        (f"/v1/merchant/iot/cards/{iccid}/commands", {"command": "suspend"}),
        (f"/v1/merchant/iot/cards/{iccid}/activation", {"imei": "356938035643809"}),
        (f"/v1/merchant/iot/cards/{iccid}/device-reports", {"imei": "356938035643809"}),
        (f"/v1/merchant/iot/orders/{order_id}/refunds", {}),
    ):
        answer = await http.post(path, json=body, headers=idem(a.merchant))
        assert answer.status_code == 404, (path, answer.text)
    assert (await http.get("/v1/merchant/iot/cards", headers=a.merchant)).json()["items"][0][
        "iccid"
    ] != iccid
    assert (await http.get("/v1/merchant/iot/orders", headers=a.merchant)).json()["items"] == []
    assert (await http.get("/v1/merchant/iot/buyers", headers=a.merchant)).json()["items"] == []
    assert (await http.get("/v1/merchant/iot/invoices", headers=a.merchant)).json()["items"] == []
    # B sees them all.
    assert (await http.get(f"/v1/merchant/iot/cards/{iccid}", headers=b.merchant)).is_success
    assert (await http.get(f"/v1/merchant/iot/buyers/{buyer_id}", headers=b.merchant)).is_success


async def test_holders_see_only_their_own(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    _, stranger = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    for path in (
        f"/v1/iot/cards/{iccid}",
        f"/v1/iot/cards/{iccid}/usage",
        f"/v1/iot/cards/{iccid}/verification",
    ):
        assert_problem(await http.get(path, headers=stranger), 404, "card-not-found")
    assert (await http.get("/v1/iot/cards", headers=stranger)).json()["items"] == []
    answer = await http.post(
        f"/v1/iot/cards/{iccid}/commands", json={"command": "suspend"}, headers=idem(stranger)
    )
    assert_problem(answer, 404, "card-not-found")
    # Merchants and holders use their own doors.
    assert (await http.get("/v1/iot/cards", headers=store.merchant)).status_code == 403
    assert (await http.get("/v1/merchant/iot/cards", headers=holder)).status_code == 403
