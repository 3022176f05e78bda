"""Every IoT list pages: walked a few items at a time, its pages hold every expected item
exactly once and in the list's order; a cursor the list did not hand out is a problem."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import httpx
import pytest

from flowbill.paging import encode_cursor
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import (
    assert_bad_cursor,
    bearer,
    distinct,
    make_tenant,
    walk_items,
)
from tests.iot_cards.factories import (
    Store,
    active_card,
    paid_card,
    sweep,
    use_data,
    wholesale_plan,
)


async def test_the_merchants_and_holders_lists_page(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=5, data_mb=10)
    more_plans = [
        await wholesale_plan(http, operator_key, name=f"paging plan {n}") for n in range(2)
    ]
    for plan in more_plans:
        await store.price(plan, retail_minor=2000)
    for percent in (50, 80, 90):
        made = await http.post(
            "/v1/merchant/iot/thresholds", json={"percent": percent}, headers=store.merchant
        )
        assert made.status_code == 201, made.text
    first_id, first_key = await make_tenant(settings, role=Role.DRIVER)
    second_id, second_key = await make_tenant(settings, role=Role.DRIVER)
    orders = [(await paid_card(http, store, bearer(first_key)))[1] for _ in range(3)]
    active, _ = await active_card(http, store, bearer(second_key))
    orders.append((await http.get("/v1/iot/orders", headers=bearer(second_key))).json()["items"][0])
    await use_data(settings, active, mb=10)
    await sweep(http, operator_key)
    merchant = store.merchant_key

    cards = await walk_items(http, "/v1/merchant/iot/cards", key=merchant)
    assert distinct(cards, "iccid") == sorted(c[0] for c in store.cards)
    plans = await walk_items(http, "/v1/merchant/iot/plans", key=merchant)
    assert distinct(plans, "plan_id") == [str(p["plan_id"]) for p in [store.plan, *more_plans]]
    newest_first = [str(o["order_id"]) for o in reversed(orders)]
    assert (
        distinct(await walk_items(http, "/v1/merchant/iot/orders", key=merchant), "order_id")
        == newest_first
    )
    invoices = await walk_items(http, "/v1/merchant/iot/invoices", key=merchant)
    assert distinct(invoices, "invoice_id")
    assert [i["order_id"] for i in invoices] == newest_first
    buyers = await walk_items(http, "/v1/merchant/iot/buyers", key=merchant, limit=1)
    assert distinct(buyers, "buyer_id") == [first_id, second_id]
    thresholds = await walk_items(http, "/v1/merchant/iot/thresholds", key=merchant)
    assert [t["percent"] for t in thresholds] == [50, 80, 90]
    alerts = await walk_items(http, "/v1/merchant/iot/usage-alerts", key=merchant)
    assert sorted(a["percent"] for a in alerts) == [50, 80, 90]
    assert [a["alert_id"] for a in alerts] == sorted((a["alert_id"] for a in alerts), reverse=True)

    mine = await walk_items(http, "/v1/iot/cards", key=first_key)
    assert distinct(mine, "iccid") == sorted(str(o["iccid"]) for o in orders[:3])
    assert (
        distinct(await walk_items(http, "/v1/iot/orders", key=first_key), "order_id")
        == newest_first[1:]
    )
    holder_invoices = await walk_items(http, "/v1/iot/invoices", key=first_key)
    assert [i["order_id"] for i in holder_invoices] == newest_first[1:]


async def test_the_plan_catalogues_page(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=0)
    made = [await wholesale_plan(http, operator_key, name=f"catalogue {n}") for n in range(3)]
    withdrawn = await http.patch(
        f"/v1/operator/iot/plans/{made[1]['plan_id']}",
        json={"active": False},
        headers=bearer(operator_key),
    )
    assert withdrawn.status_code == 200, withdrawn.text
    # Other tests' plans are in these lists too: ours are there once each, in their order.
    everything = await walk_items(http, "/v1/operator/iot/plans", key=operator_key, limit=5)
    keys = [(datetime.fromisoformat(p["created_at"]), UUID(p["plan_id"])) for p in everything]
    assert keys == sorted(set(keys))
    every_id = [p["plan_id"] for p in everything]
    assert [i for i in every_id if i in {p["plan_id"] for p in made}] == [
        p["plan_id"] for p in made
    ]
    on_sale = await walk_items(
        http, "/v1/merchant/iot/wholesale-plans", key=store.merchant_key, limit=5
    )
    assert all(p["active"] for p in on_sale)
    sold = [p["plan_id"] for p in on_sale]
    assert [i for i in sold if i in {p["plan_id"] for p in made}] == [
        made[0]["plan_id"],
        made[2]["plan_id"],
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/merchant/iot/wholesale-plans",
        "/v1/merchant/iot/plans",
        "/v1/merchant/iot/cards",
        "/v1/merchant/iot/orders",
        "/v1/merchant/iot/buyers",
        "/v1/merchant/iot/invoices",
        "/v1/merchant/iot/thresholds",
        "/v1/merchant/iot/usage-alerts",
        "/v1/iot/cards",
        "/v1/iot/orders",
        "/v1/iot/invoices",
        "/v1/operator/iot/plans",
    ],
)
async def test_a_cursor_the_list_did_not_hand_out_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, path: str
) -> None:
    role = {"merchant": Role.MERCHANT, "iot": Role.DRIVER}.get(path.split("/")[2])
    key = operator_key if role is None else (await make_tenant(settings, role=role))[1]
    # Garbage, and a well-formed cursor of another list.
    other = "iot-cards" if path.endswith("usage-alerts") else "iot-usage-alerts"
    for cursor in ("not-a-cursor", encode_cursor((1,), scope=other)):
        answer = await http.get(path, params={"cursor": cursor}, headers=bearer(key))
        assert_bad_cursor(answer)
