"""The whole journey over HTTP: import, plans and prices, a purchase paid through the payment
gateway, real-name verification, activation, usage from the metered data, a recharge,
invoices, the books and the merchant's statement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from flowbill.periods import Calendar, format_period
from flowbill.settings import Settings
from tests.iot_cards.factories import (
    MB,
    TAX_ID,
    Store,
    buyer,
    idem,
    new_imei,
    paid_card,
    poll,
    use_data,
    verify,
    wholesale_plan,
)

# A request under the same key that differs from the first one.
OTHER_MERCHANT = "00000000-0000-0000-0000-000000000000"


async def ledger_amounts(settings: Settings, txn_ids: list[int]) -> list[tuple[str, str, int]]:
    """(account kind, owner, amount) of the entries of some ledger transactions."""
    async with await psycopg.AsyncConnection.connect(settings.database_dsn) as conn:
        cur = await conn.execute(
            """
            SELECT a.kind, a.owner, e.amount FROM ledger_entries e
            JOIN ledger_accounts a USING (account_id) WHERE e.txn_id = ANY(%s)
            ORDER BY e.entry_id
            """,
            (txn_ids,),
        )
        return [(str(k), str(o), int(a)) for k, o, a in await cur.fetchall()]


async def order_txns(settings: Settings, order_id: object) -> list[int]:
    async with await psycopg.AsyncConnection.connect(settings.database_dsn) as conn:
        cur = await conn.execute(
            "SELECT txn_id FROM ledger_transactions WHERE memo->>'iot_order' = %s",
            (str(order_id),),
        )
        return [int(r[0]) for r in await cur.fetchall()]


async def test_from_import_to_recharge(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(
        cards=2, retail_minor=3000, wholesale_minor=1000, data_mb=100
    )
    holder_id, holder = await buyer(settings)
    shop = await http.get(f"/v1/iot/stores/{store.merchant_id}", headers=holder)
    assert shop.status_code == 200, shop.text
    assert shop.json()["cards_in_stock"] == 2
    assert shop.json()["plans"][0]["retail_minor"] == 3000

    # Buy: the card is the buyer's at once, the payment follows.
    iccid, order = await paid_card(http, store, holder)
    assert iccid == store.cards[0][0]
    card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
    assert card["state"] == "sold"
    assert card["allowed_commands"] == ["submit_verification"]

    # Activation waits for the verification.
    early = await http.post(
        f"/v1/iot/cards/{iccid}/activation", json={"imei": new_imei()}, headers=idem(holder)
    )
    assert early.status_code == 409
    assert early.json()["allowed"] == ["submit_verification"]
    sent = await verify(http, holder, iccid, name="张小三")
    assert sent.status_code == 202, sent.text
    assert sent.json()["name_masked"] == "张*三"
    assert sent.json()["id_masked"][:4] == "1101"
    assert sent.json()["id_masked"][4:14] == "*" * 10
    assert sent.json()["phone_masked"] == "138****5678"
    done = await poll(
        http,
        holder,
        f"/v1/iot/cards/{iccid}/verification",
        field="state",
        until={"verified", "rejected"},
    )
    assert done["state"] == "verified"
    imei = new_imei()
    activated = await http.post(
        f"/v1/iot/cards/{iccid}/activation", json={"imei": imei}, headers=idem(holder)
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["state"] == "active"
    assert activated.json()["imei"] == imei
    assert [h["command"] for h in activated.json()["history"]] == [
        "sell",
        "submit_verification",
        "activate",
    ]

    # Usage comes from the metered data.
    await use_data(settings, iccid, mb=30, app="nav.amap")
    usage = (await http.get(f"/v1/iot/cards/{iccid}/usage", headers=holder)).json()
    assert usage["quota_bytes"] == 100 * MB
    assert usage["used_bytes"] == 30 * MB
    assert usage["by_app"] == [{"app": "nav.amap", "up_bytes": 0, "down_bytes": 30 * MB}]
    merchant_view = await http.get(f"/v1/merchant/iot/cards/{iccid}/usage", headers=store.merchant)
    assert merchant_view.json()["used_bytes"] == 30 * MB

    # A top-up recharge adds data to this month.
    top_up = await wholesale_plan(
        http, operator_key, name="50 MB top-up", kind="top_up", data_mb=50, wholesale_minor=300
    )
    await store.price(top_up, retail_minor=500)
    recharged = await http.post(
        f"/v1/iot/cards/{iccid}/recharges",
        json={"plan_id": top_up["plan_id"]},
        headers=idem(holder),
    )
    assert recharged.status_code == 202, recharged.text
    paid = await poll(
        http,
        holder,
        f"/v1/iot/orders/{recharged.json()['order_id']}",
        field="state",
        until={"paid", "failed"},
    )
    assert paid["state"] == "paid"
    usage = (await http.get(f"/v1/iot/cards/{iccid}/usage", headers=holder)).json()
    assert usage["quota_bytes"] == 150 * MB

    # Each payment split into the merchant's revenue and the platform's wholesale.
    for order_id, retail, wholesale in (
        (order["order_id"], 3000, 1000),
        (paid["order_id"], 500, 300),
    ):
        entries = await ledger_amounts(settings, await order_txns(settings, order_id))
        assert sum(a for *_, a in entries) == 0
        merchant = sum(a for k, o, a in entries if k == "merchant_payments")
        platform = sum(a for k, _, a in entries if k == "platform_revenue")
        paid_by_buyer = -sum(a for k, o, a in entries if k == "user_payments" and o == holder_id)
        assert (merchant, platform) == (retail - wholesale, wholesale)
        assert merchant + platform == paid_by_buyer == retail

    # Invoices: one per paid order, numbered by the authority, JSON and PDF.
    invoices = await poll_invoices(http, store.merchant, count=2)
    for invoice in invoices:
        assert invoice["state"] == "issued"
        assert len(invoice["number"]) == 20
        assert invoice["number"].isdigit()
        document = invoice["document"]
        assert document["seller"] == {"name": "深圳物联科技有限公司", "tax_id": TAX_ID}
        assert document["buyer"]["name"] == "个人"
        assert document["amount_minor"] + document["tax_minor"] == document["total_minor"]
        pdf = await http.get(f"/v1/iot/invoices/{invoice['invoice_id']}/pdf", headers=holder)
        assert pdf.status_code == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-1.4")
        assert pdf.content.rstrip().endswith(b"%%EOF")
    totals = sorted(i["document"]["total_minor"] for i in invoices)
    assert totals == [500, 3000]

    # The month's statement.
    month = format_period(Calendar.from_settings(settings).period_of(datetime.now(UTC)))
    statement = await http.get(f"/v1/merchant/iot/statements/{month}", headers=store.merchant)
    assert statement.status_code == 200, statement.text
    assert statement.json()["totals"] == {
        "orders": 2,
        "refunds": 0,
        "gross_minor": 3500,
        "wholesale_minor": 1300,
        "revenue_minor": 2200,
    }
    buyers = (await http.get("/v1/merchant/iot/buyers", headers=store.merchant)).json()["items"]
    assert buyers == [
        {
            "buyer_id": holder_id,
            "cards": 1,
            "orders": 2,
            "name_masked": "张*三",
            "first_order_at": buyers[0]["first_order_at"],
        }
    ]


async def poll_invoices(
    http: httpx.AsyncClient, headers: dict[str, str], *, count: int
) -> list[dict[str, Any]]:
    for _ in range(200):
        found: list[dict[str, Any]] = (
            await http.get("/v1/merchant/iot/invoices", headers=headers)
        ).json()["items"]
        if len(found) >= count and all(i["state"] == "issued" for i in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"invoices not issued: {found}")


async def test_an_order_repeated_with_its_key_is_one_order(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=2)
    _, holder = await buyer(settings)
    body = {"merchant_id": store.merchant_id, "plan_id": store.plan["plan_id"]}
    headers = idem(holder, "same-order")
    first = await http.post("/v1/iot/orders", json=body, headers=headers)
    again = await http.post("/v1/iot/orders", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["order_id"] == again.json()["order_id"]
    other = await http.post(
        "/v1/iot/orders",
        json={**body, "plan_id": store.plan["plan_id"], "merchant_id": OTHER_MERCHANT},
        headers=headers,
    )
    assert other.status_code == 409
    shop = (await http.get(f"/v1/iot/stores/{store.merchant_id}", headers=holder)).json()
    assert shop["cards_in_stock"] == 1
    assert (await http.get("/v1/merchant/iot/orders", headers=store.merchant)).json()["items"][0][
        "buyer_id"
    ]
