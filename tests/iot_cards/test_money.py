"""Money: retail prices never below wholesale, payments that fail or time out, refunds with
red-letter invoices that net to zero, the books, and the last card under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from flowbill import db
from flowbill.periods import Calendar, format_period
from flowbill.settings import Settings
from tests.conftest import assert_problem, bearer
from tests.iot_cards.factories import (
    Store,
    active_card,
    buy,
    buyer,
    idem,
    paid_card,
    poll,
    wholesale_plan,
)
from tests.wallet.factories import behave, simulator_ledger
from wallet import service as ledger


async def test_prices_never_go_below_wholesale(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=0, wholesale_minor=1000)
    below = await http.put(
        f"/v1/merchant/iot/plans/{store.plan['plan_id']}",
        json={"retail_minor": 999},
        headers=store.merchant,
    )
    assert assert_problem(below, 422, "price-below-wholesale")["wholesale_minor"] == 1000
    for bad in ({"retail_minor": 0}, {"retail_minor": 10.5}, {"retail_minor": "x"}, {}):
        answer = await http.put(
            f"/v1/merchant/iot/plans/{store.plan['plan_id']}", json=bad, headers=store.merchant
        )
        assert_problem(answer, 422, "invalid-input")
    at_cost = await store.price(store.plan, retail_minor=1000)
    assert at_cost["margin_minor"] == 0
    missing = await http.put(
        "/v1/merchant/iot/plans/00000000-0000-0000-0000-000000000000",
        json={"retail_minor": 5000},
        headers=store.merchant,
    )
    assert_problem(missing, 404, "plan-not-found")
    bad_plan = await http.post(
        "/v1/operator/iot/plans",
        headers=bearer(operator_key),
        json={"name": "x", "kind": "top_up", "data_mb": 10, "months": 3, "wholesale_minor": 100},
    )
    assert_problem(bad_plan, 422, "invalid-input")
    bad_tax = await http.put(
        "/v1/merchant/iot/profile",
        headers=store.merchant,
        json={"seller_name": "x", "tax_id": "91350100M000100Y40"},
    )
    assert_problem(bad_tax, 422, "invalid-tax-id")


async def test_two_buyers_of_the_last_card_never_both_get_it(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    holders = [(await buyer(settings))[1] for _ in range(6)]
    answers = await asyncio.gather(*(buy(http, store, h) for h in holders))
    assert sorted(a.status_code for a in answers) == [202] + [409] * 5
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "cards-out-of-stock")


async def test_a_declined_payment_puts_the_card_back_on_the_shelf(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    await behave(gateway_url, decline_rate=1.0)
    placed = await buy(http, store, holder)
    order = await poll(
        http,
        holder,
        f"/v1/iot/orders/{placed.json()['order_id']}",
        field="state",
        until={"paid", "failed"},
    )
    assert (order["state"], order["reason"]) == ("failed", "payment declined")
    assert (await http.get(f"/v1/iot/cards/{order['iccid']}", headers=holder)).status_code == 404
    card = (
        await http.get(f"/v1/merchant/iot/cards/{order['iccid']}", headers=store.merchant)
    ).json()
    assert (card["state"], card["holder_id"]) == ("inventory", None)
    await behave(gateway_url)
    _, again = await paid_card(http, store, holder)
    assert again["iccid"] == order["iccid"]


async def test_a_payment_that_times_out_is_settled_by_reconciliation(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    # Applied by the provider, but the answer is lost: never charged twice, never lost.
    await behave(gateway_url, lost_response_rate=1.0, hang_seconds=2.0)
    placed = await buy(http, store, holder)
    await asyncio.sleep(1.5)
    order_path = f"/v1/iot/orders/{placed.json()['order_id']}"
    assert (await http.get(order_path, headers=holder)).json()["state"] == "placed"
    await behave(gateway_url)
    report = await http.post("/v1/operator/iot/reconciliations", headers=bearer(operator_key))
    assert report.status_code == 200, report.text
    assert report.json()["payments"] >= 1
    order = await poll(http, holder, order_path, field="state", until={"paid"})
    payments = (await simulator_ledger(gateway_url))["payments"]
    assert payments[str(order["order_id"])]["captured_minor"] == 3000  # type: ignore[index]


async def test_a_refund_reverses_the_books_and_a_red_invoice_cancels_the_blue(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    store = await Store(http, settings, operator_key).open(
        cards=1, retail_minor=3000, wholesale_minor=1000
    )
    buyer_id, holder = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    order_id = (await http.get("/v1/iot/orders", headers=holder)).json()["items"][0]["order_id"]
    await poll_invoice_count(http, store.merchant, 1)
    bad_state = await http.post(
        f"/v1/merchant/iot/orders/{order_id}/refunds",
        json={"reason": 1},
        headers=idem(store.merchant),
    )
    assert_problem(bad_state, 422, "invalid-input")
    key = idem(store.merchant)
    refund = await http.post(
        f"/v1/merchant/iot/orders/{order_id}/refunds",
        json={"reason": "device returned"},
        headers=key,
    )
    assert refund.status_code == 202, refund.text
    repeat = await http.post(
        f"/v1/merchant/iot/orders/{order_id}/refunds",
        json={"reason": "device returned"},
        headers=key,
    )
    assert repeat.json()["refund_id"] == refund.json()["refund_id"]
    done = await poll(
        http,
        store.merchant,
        f"/v1/merchant/iot/orders/{order_id}/refund",
        field="state",
        until={"refunded", "failed"},
    )
    assert done["state"] == "refunded"
    twice = await http.post(
        f"/v1/merchant/iot/orders/{order_id}/refunds", json={}, headers=idem(store.merchant)
    )
    assert_problem(twice, 409, "not-refundable")

    invoices = await poll_invoice_count(http, store.merchant, 2)
    blue = next(i for i in invoices if i["colour"] == "blue")
    red = next(i for i in invoices if i["colour"] == "red")
    assert red["original_invoice_id"] == blue["invoice_id"]
    assert red["document"]["original_number"] == blue["number"]
    for field in ("amount_minor", "tax_minor", "total_minor"):
        assert blue["document"][field] + red["document"][field] == 0
    assert red["document"]["lines"][0]["quantity"] == -1
    pdf = await http.get(
        f"/v1/merchant/iot/invoices/{red['invoice_id']}/pdf", headers=store.merchant
    )
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")

    # The card left its holder; the books net to zero for this order.
    card = (await http.get(f"/v1/merchant/iot/cards/{iccid}", headers=store.merchant)).json()
    assert card["state"] == "terminated"
    async with await psycopg.AsyncConnection.connect(settings.database_dsn) as conn:
        cur = await conn.execute(
            """
            SELECT a.kind, sum(e.amount) FROM ledger_entries e
            JOIN ledger_accounts a USING (account_id)
            JOIN ledger_transactions t USING (txn_id)
            WHERE t.memo->>'iot_order' = %s GROUP BY a.kind
            """,
            (order_id,),
        )
        net = {kind: int(total) for kind, total in await cur.fetchall()}
    assert net == {"merchant_payments": 0, "platform_revenue": 0, "user_payments": 0}
    captured = (await simulator_ledger(gateway_url))["payments"][order_id]  # type: ignore[index]
    assert captured == {"captured_minor": 3000, "refunded_minor": 3000}
    month = format_period(Calendar.from_settings(settings).period_of(datetime.now(UTC)))
    statement = (
        await http.get(f"/v1/merchant/iot/statements/{month}", headers=store.merchant)
    ).json()
    assert statement["totals"]["revenue_minor"] == 0
    assert statement["refunds"][0]["retail_minor"] == -3000
    conn2 = await db.connect(settings, application_name="flowbill-test")
    try:
        assert await ledger.check_books(conn2) == []
    finally:
        await conn2.close()
    assert buyer_id


async def poll_invoice_count(
    http: httpx.AsyncClient, headers: dict[str, str], count: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(200):
        found = (await http.get("/v1/merchant/iot/invoices", headers=headers)).json()["items"]
        if len(found) >= count and all(i["state"] == "issued" for i in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"invoices: {found}")


async def test_orders_refuse_what_the_store_does_not_sell(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    top_up = await wholesale_plan(
        http, operator_key, kind="top_up", data_mb=10, wholesale_minor=100
    )
    unpriced = await buy(http, store, holder, plan_id=top_up["plan_id"])
    assert_problem(unpriced, 409, "plan-not-offered")
    await store.price(top_up, retail_minor=200)
    wrong_kind = await buy(http, store, holder, plan_id=top_up["plan_id"])
    assert_problem(wrong_kind, 422, "wrong-plan-kind")
    nowhere = await http.post(
        "/v1/iot/orders",
        headers=idem(holder),
        json={"merchant_id": "00000000-0000-0000-0000-000000000000", "plan_id": top_up["plan_id"]},
    )
    assert_problem(nowhere, 404, "merchant-not-found")
    bad_title = await buy(http, store, holder, invoice_tax_id="91350100M000100Y43")
    assert_problem(bad_title, 422, "invalid-input")
    bad_tax = await buy(
        http, store, holder, invoice_title="某公司", invoice_tax_id="91350100M000100Y40"
    )
    assert_problem(bad_tax, 422, "invalid-tax-id")
    no_key = await http.post(
        "/v1/iot/orders",
        headers=holder,
        json={"merchant_id": store.merchant_id, "plan_id": store.plan["plan_id"]},
    )
    assert_problem(no_key, 422, "invalid-input")
    company = await buy(
        http, store, holder, invoice_title="某某物流有限公司", invoice_tax_id="91350100M000100Y43"
    )
    assert company.status_code == 202, company.text
    withdrawn = await http.patch(
        f"/v1/operator/iot/plans/{store.plan['plan_id']}",
        json={"active": False},
        headers=bearer(operator_key),
    )
    assert withdrawn.json()["active"] is False
    shop = (await http.get(f"/v1/iot/stores/{store.merchant_id}", headers=holder)).json()
    assert shop["plans"] == [{**shop["plans"][0], "kind": "top_up"}]


async def test_an_invoice_the_authority_could_not_issue_is_issued_later(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, iot_gateway_url: str
) -> None:
    from tests.iot_cards.factories import behave_iot

    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    await behave_iot(iot_gateway_url, fail_rate=1.0)
    await paid_card(http, store, holder)
    invoices = (await http.get("/v1/iot/invoices", headers=holder)).json()["items"]
    assert [i["state"] for i in invoices] == ["pending"]
    pending_pdf = await http.get(
        f"/v1/iot/invoices/{invoices[0]['invoice_id']}/pdf", headers=holder
    )
    assert_problem(pending_pdf, 409, "invoice-pending")
    await behave_iot(iot_gateway_url)
    await asyncio.sleep(1.2)
    report = await http.post("/v1/operator/iot/reconciliations", headers=bearer(operator_key))
    assert report.json()["invoices"] >= 1
    invoices = (await http.get("/v1/iot/invoices", headers=holder)).json()["items"]
    assert invoices[0]["state"] == "issued"
    assert len(invoices[0]["number"]) == 20
