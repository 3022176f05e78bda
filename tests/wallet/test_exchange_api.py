"""The exchange catalogue and its orders, over HTTP, with the simulated payment and fulfilment
providers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flowbill.settings import Settings
from tests.conftest import assert_problem, bearer
from tests.wallet.factories import (
    MB,
    Shop,
    balance_of,
    behave,
    carrier,
    funded_driver,
    idem,
    settled,
    simulator_ledger,
)

FINAL = {"fulfilled", "refunded", "failed"}


@pytest.fixture(autouse=True)
async def normal_gateway(gateway_url: str) -> None:
    await behave(gateway_url)


async def add_item(http: httpx.AsyncClient, operator_key: str, **spec: object) -> dict[str, object]:
    body = {"kind": "membership", "name": "Video membership, 1 month", "sku": "video-1m",
            "price_bytes": 30 * MB, **spec}  # fmt: skip
    made = await http.post("/v1/operator/wallet/catalogue", json=body, headers=bearer(operator_key))
    assert made.status_code == 201, made.text
    item: dict[str, object] = made.json()
    return item


async def order(
    http: httpx.AsyncClient, wallet: dict[str, str], item: dict[str, object], **extra: object
) -> httpx.Response:
    body = {"item_id": item["item_id"], **extra}
    return await http.post("/v1/wallet/exchange-orders", json=body, headers=idem(wallet))


def order_path(placed: httpx.Response) -> str:
    return f"/v1/wallet/exchange-orders/{placed.json()['order_id']}"


async def test_a_redemption_without_money_is_paid_at_once_and_delivered(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await add_item(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=100)
    placed = await order(http, wallet, item)
    assert placed.status_code == 202, placed.text
    assert placed.json()["state"] == "paid"
    done = await settled(http, wallet, order_path(placed), final=FINAL)
    assert done["state"] == "fulfilled"
    assert done["voucher"]
    assert [e["state"] for e in done["events"]] == ["placed", "paid", "fulfilled"]
    assert await balance_of(http, wallet) == 70 * MB


async def test_the_money_part_is_charged_and_red_envelopes_cost_by_carrier(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    item = await add_item(
        http, operator_key, kind="red_envelope", name="Red envelope, 2 CNY", sku="env-2",
        price_bytes=100 * MB, carrier_prices={carrier_id: 50 * MB}, price_minor=1,
    )  # fmt: skip
    _, wallet = await funded_driver(http, settings, mb=200)
    assert_problem(await order(http, wallet, item), 422, "carrier-required")
    placed = await order(http, wallet, item, carrier_id=carrier_id, quantity=2)
    assert placed.status_code == 202, placed.text
    assert (placed.json()["unit_bytes"], placed.json()["total_minor"]) == (50 * MB, 2)
    done = await settled(http, wallet, order_path(placed), final=FINAL)
    assert done["state"] == "fulfilled"
    assert done["payment_state"] == "captured"
    assert await balance_of(http, wallet) == 100 * MB
    payments = (await simulator_ledger(gateway_url))["payments"]
    assert payments[placed.json()["order_id"]]["captured_minor"] == 2  # type: ignore[index]


async def test_a_declined_payment_refunds_the_data_and_the_stock(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    item = await add_item(http, operator_key, price_minor=500, stock=5)
    _, wallet = await funded_driver(http, settings, mb=100)
    await behave(gateway_url, decline_rate=1.0)
    placed = await order(http, wallet, item)
    done = await settled(http, wallet, order_path(placed), final=FINAL)
    assert done["state"] == "refunded"
    assert done["payment_state"] == "failed"
    assert "declined" in str(done["reason"])
    assert [e["state"] for e in done["events"]] == ["placed", "failed", "refunded"]
    assert await balance_of(http, wallet) == 100 * MB
    catalogue = (await http.get("/v1/wallet/catalogue", headers=wallet)).json()["items"]
    assert next(i for i in catalogue if i["item_id"] == item["item_id"])["stock"] == 5


async def test_a_failed_delivery_refunds_data_and_money(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    item = await add_item(http, operator_key, price_minor=300)
    _, wallet = await funded_driver(http, settings, mb=100)
    # The payment is captured, then the provider cannot deliver.
    await behave(gateway_url, pending_rate=1.0, settle_delay_seconds=0.2)
    placed = await order(http, wallet, item)
    await settled(http, wallet, order_path(placed), final={"paid", *FINAL})
    await behave(gateway_url, decline_rate=1.0)
    await asyncio.sleep(1.2)
    answer = await http.post("/v1/operator/wallet/reconciliations", headers=bearer(operator_key))
    assert answer.status_code == 200, answer.text
    done = await settled(http, wallet, order_path(placed), final={"refunded", "fulfilled"})
    assert done["state"] == "refunded", done
    assert await balance_of(http, wallet) == 100 * MB
    payments = (await simulator_ledger(gateway_url))["payments"]
    assert payments[placed.json()["order_id"]] == {  # type: ignore[index]
        "captured_minor": 300, "refunded_minor": 300,
    }  # fmt: skip


async def test_bad_orders_are_refused_and_take_nothing(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    limited = await add_item(http, operator_key, stock=1, price_bytes=MB)
    capped = await add_item(http, operator_key, per_user_limit=2, price_bytes=MB)
    _, wallet = await funded_driver(http, settings, mb=40)
    assert_problem(await order(http, wallet, limited, quantity=2), 409, "out-of-stock")
    assert_problem(await order(http, wallet, capped, quantity=3), 409, "item-limit-reached")
    assert (await order(http, wallet, capped, quantity=2)).status_code == 202
    assert_problem(await order(http, wallet, capped), 409, "item-limit-reached")
    unknown = {"item_id": "00000000-0000-0000-0000-000000000000"}
    assert_problem(await order(http, wallet, unknown), 404, "item-not-found")
    assert_problem(await order(http, wallet, limited, quantity=0), 422, "invalid-input")
    assert_problem(await order(http, wallet, limited, quantity=-1), 422, "invalid-input")
    big = await add_item(http, operator_key, price_bytes=500 * MB)
    assert_problem(await order(http, wallet, big), 409, "insufficient-balance")
    assert await balance_of(http, wallet) == 38 * MB
    withdrawn = await http.patch(
        f"/v1/operator/wallet/catalogue/{limited['item_id']}", json={"active": False},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert withdrawn.status_code == 200
    assert_problem(await order(http, wallet, limited), 404, "item-not-found")


async def test_fifty_concurrent_redemptions_against_one_wallet_never_overspend(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await add_item(http, operator_key, kind="merchant_goods", price_bytes=3 * MB,
                          merchant_id=(await Shop(http, settings).open()).merchant_id)  # fmt: skip
    _, wallet = await funded_driver(http, settings, mb=100)
    answers = await asyncio.gather(*(order(http, wallet, item) for _ in range(50)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 33 + [409] * 17, [a.text for a in answers if a.status_code >= 500]
    assert await balance_of(http, wallet) == MB
    books = await http.get("/v1/operator/wallet/ledger-check", headers=bearer(operator_key))
    assert books.json() == {"balanced": True, "problems": []}


async def test_merchant_goods_are_fulfilled_by_the_merchant_and_returned_in_part(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    shop = await Shop(http, settings).open()
    item = await add_item(
        http, operator_key, kind="merchant_goods", name="Phone case", sku="case-1",
        price_bytes=MB, price_minor=1, merchant_id=shop.merchant_id, stock=10,
    )  # fmt: skip
    _, wallet = await funded_driver(http, settings, mb=10)
    placed = await order(http, wallet, item, quantity=3)
    paid = await settled(http, wallet, order_path(placed), final={"paid", *FINAL})
    assert paid["state"] == "paid"
    order_id = placed.json()["order_id"]
    mine = (await http.get("/v1/merchant/exchange-orders", headers=shop.merchant)).json()["items"]
    assert [o["order_id"] for o in mine] == [order_id]
    rival = await Shop(http, settings).open()
    stolen = await http.post(
        f"/v1/merchant/exchange-orders/{order_id}/fulfilment", json={"delivered": True},
        headers=rival.merchant,
    )  # fmt: skip
    assert_problem(stolen, 404, "order-not-found")
    shipped = await http.post(
        f"/v1/merchant/exchange-orders/{order_id}/fulfilment",
        json={"delivered": True, "note": "SF1234567890"}, headers=shop.merchant,
    )  # fmt: skip
    assert shipped.json()["state"] == "fulfilled"
    assert await balance_of(http, wallet) == 7 * MB
    key = idem(wallet, "return-1")
    path = f"/v1/wallet/exchange-orders/{order_id}/returns"
    returned = await http.post(path, json={"quantity": 2}, headers=key)
    assert returned.status_code == 200, returned.text
    assert returned.json()["returned_quantity"] == 2
    again = await http.post(path, json={"quantity": 2}, headers=key)
    assert again.json()["returned_quantity"] == 2
    assert await balance_of(http, wallet) == 9 * MB
    assert_problem(await http.post(path, json={"quantity": 2}, headers=idem(wallet)), 409,
                   "refund-too-large")  # fmt: skip
    await asyncio.sleep(0.5)
    payments = (await simulator_ledger(gateway_url))["payments"]
    assert payments[order_id] == {"captured_minor": 3, "refunded_minor": 2}  # type: ignore[index]
    last = await http.post(path, json={"quantity": 1}, headers=idem(wallet))
    assert last.status_code == 200
    done = await settled(http, wallet, f"/v1/wallet/exchange-orders/{order_id}",
                         final={"refunded"})  # fmt: skip
    assert done["returned_quantity"] == 3
    assert await balance_of(http, wallet) == 10 * MB
    books = await http.get("/v1/operator/wallet/ledger-check", headers=bearer(operator_key))
    assert books.json() == {"balanced": True, "problems": []}


async def test_delivered_vouchers_cannot_be_returned(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await add_item(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=100)
    placed = await order(http, wallet, item)
    await settled(http, wallet, order_path(placed), final=FINAL)
    answer = await http.post(
        f"{order_path(placed)}/returns", json={"quantity": 1}, headers=idem(wallet)
    )
    assert_problem(answer, 409, "not-returnable")
    _, other = await funded_driver(http, settings, mb=1)
    peek = await http.get(order_path(placed), headers=other)
    assert_problem(peek, 404, "order-not-found")
