"""Every wallet list pages one way: `limit` and an opaque `cursor`, answered as a Page. Each
list is walked a few items a page and the pages together must hold every item once, in order."""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flowbill.db import Connection
from flowbill.periods import Calendar
from flowbill.settings import Settings
from flowbill.units import MB
from tests.conftest import assert_bad_cursor, bearer, distinct, walk_items
from tests.wallet.factories import Shop, carrier, driver, funded_driver, idem
from wallet import reports, service

Item = dict[str, object]
T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)


def in_order(
    items: Sequence[Item], key: Callable[[Item], object], *, reverse: bool = False
) -> None:
    """Each item once, in the order of its key (a moment, a number, a day, or a text the
    database and Python order alike)."""
    keys = [key(item) for item in items]
    assert len(set(map(repr, keys))) == len(keys), "an item came twice"
    assert keys == sorted(keys, reverse=reverse)  # type: ignore[type-var]


async def everything(http: httpx.AsyncClient, path: str, key: str, **params: str) -> list[Item]:
    """The list in one page, to compare the walked pages with."""
    answer = await http.get(path, params={**params, "limit": 1000}, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_cursor"] is None
    items: list[Item] = answer.json()["items"]
    return items


async def shared_list(
    http: httpx.AsyncClient, path: str, key: str, *, id_field: str, ours: Sequence[object]
) -> None:
    """A list other tests add to as well: walked two items a page, it holds what the one-page
    answer holds, each item once, ours among them. (Texts are ordered by the database's
    collation, so the one-page answer is the order to compare with.)"""
    walked = await walk_items(http, path, key=key)
    assert walked == await everything(http, path, key)
    distinct(walked, id_field)
    assert set(ours) <= {item[id_field] for item in walked}


def api_key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_a_drivers_lots_and_history_page_through(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    user, wallet = await driver(settings)
    for days in (30, 10, 20, 40, 50):
        campaign = await shop.campaign(bytes_per_action=MB, budget_bytes=MB, validity_days=days)
        assert (await shop.event(campaign, user)).status_code == 200
    key = api_key(wallet)
    lots = await walk_items(http, "/v1/wallet/lots", key=key)
    assert lots == await everything(http, "/v1/wallet/lots", key)
    assert len(lots) == 5
    in_order(lots, lambda lot: (lot["expires_at"], lot["lot_id"]))
    history = await walk_items(http, "/v1/wallet/history", key=key)
    assert history == await everything(http, "/v1/wallet/history", key)
    assert [h["kind"] for h in history] == ["grant"] * 5
    in_order(history, lambda h: h["txn_id"], reverse=True)


async def test_carriers_and_a_drivers_carrier_orders_page_through(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    made = [await carrier(http, operator_key) for _ in range(3)]
    _, wallet = await driver(settings)
    for path, key in (
        ("/v1/wallet/carriers", api_key(wallet)),
        ("/v1/operator/wallet/carriers", operator_key),
    ):
        await shared_list(http, path, key, id_field="carrier_id", ours=made)
    for n in range(3):
        body = {"carrier_id": made[0], "phone": f"1380000{n:04d}", "mb": 100}
        answer = await http.post("/v1/wallet/transfers-in", json=body, headers=idem(wallet))
        assert answer.status_code == 202, answer.text
    key = api_key(wallet)
    # The gateway settles the orders meanwhile: their states may differ between the answers.
    orders = await walk_items(http, "/v1/wallet/carrier-orders", key=key)
    every = await everything(http, "/v1/wallet/carrier-orders", key)
    assert [o["order_id"] for o in orders] == [o["order_id"] for o in every]
    assert len(orders) == 3
    in_order(orders, lambda o: (o["created_at"], o["order_id"]), reverse=True)


async def test_the_catalogue_and_exchange_orders_page_through(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    shop = await Shop(http, settings).open()
    items = []
    for name in ("Tea", "Cup", "Bag"):
        made = await http.post(
            "/v1/operator/wallet/catalogue",
            json={"kind": "merchant_goods", "name": name, "sku": f"{name.lower()}-1",
                  "price_bytes": MB, "merchant_id": shop.merchant_id},
            headers=bearer(operator_key),
        )  # fmt: skip
        assert made.status_code == 201, made.text
        items.append(made.json())
    _, wallet = await driver(settings)
    for path, key in (
        ("/v1/wallet/catalogue", api_key(wallet)),
        ("/v1/operator/wallet/catalogue", operator_key),
    ):
        await shared_list(http, path, key, id_field="item_id", ours=[i["item_id"] for i in items])
    _, wallet = await funded_driver(http, settings, mb=10)
    for item in items:
        body = {"item_id": item["item_id"]}
        placed = await http.post("/v1/wallet/exchange-orders", json=body, headers=idem(wallet))
        assert placed.status_code == 202, placed.text
    for path, key in (
        ("/v1/wallet/exchange-orders", api_key(wallet)),
        ("/v1/merchant/exchange-orders", api_key(shop.merchant)),
    ):
        orders = await walk_items(http, path, key=key)
        every = await everything(http, path, key)
        assert [o["order_id"] for o in orders] == [o["order_id"] for o in every]
        assert [o["item_id"] for o in orders] == [i["item_id"] for i in reversed(items)]
        in_order(orders, lambda o: (o["created_at"], o["order_id"]), reverse=True)


async def test_a_merchants_campaigns_and_data_use_page_through(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    campaigns = [await shop.campaign(name=f"Campaign {n}", budget_bytes=30 * MB) for n in range(3)]
    users = [(await driver(settings))[0] for _ in range(3)]
    for user in users:
        assert (await shop.event(campaigns[0], user)).status_code == 200
    key = api_key(shop.merchant)
    listed = await walk_items(http, "/v1/merchant/campaigns", key=key)
    assert [c["campaign_id"] for c in listed] == [c["campaign_id"] for c in campaigns]
    assert listed[0]["users_rewarded"] == 3
    use = await walk_items(http, "/v1/merchant/data-use", key=key)
    assert use == await everything(http, "/v1/merchant/data-use", key)
    assert sorted(u["user_id"] for u in use) == sorted(users)
    assert {u["granted_bytes"] for u in use} == {10 * MB}


async def test_prices_and_what_expires_page_through(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    currencies = ["".join(secrets.choice(string.ascii_uppercase) for _ in range(3)) for _ in "abc"]
    for currency in currencies:
        answer = await http.put(
            f"/v1/operator/wallet/prices/{currency}", json={"minor_per_100mb": 600},
            headers=bearer(operator_key),
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
    await shared_list(
        http, "/v1/operator/wallet/prices", operator_key, id_field="currency", ours=currencies
    )
    for days in (1, 2, 3):
        await funded_driver(http, settings, mb=1, validity_days=days)
    days = await walk_items(
        http, "/v1/operator/wallet/expiring", key=operator_key, limit=1, params={"within_days": 5}
    )
    assert len(days) >= 3
    in_order(days, lambda d: d["day"])


async def test_breakage_pages_through(conn: Connection) -> None:
    calendar = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)
    user = f"u-{secrets.token_hex(4)}"
    funders = [str(uuid.uuid4()) for _ in range(3)]
    for funder in funders:
        await service.fund_pool(conn, key=secrets.token_hex(8), merchant=funder,
                                data_bytes=100 * MB, price_minor=600, currency="CNY")  # fmt: skip
        await service.grant(
            conn, key=secrets.token_hex(8), funder=funder, user=user, data_bytes=MB,
            expires_at=T0 + timedelta(days=1), source="campaign:test", now=T0,
        )  # fmt: skip
    await service.expire_lots(conn, now=T0 + timedelta(days=2))
    today = datetime.now(UTC).date()
    pages, cursor = [], None
    while True:
        page = await reports.breakage(
            conn, since=today - timedelta(days=1), until=today + timedelta(days=2),
            calendar=calendar, limit=2, cursor=cursor,
        )  # fmt: skip
        pages.append([line.model_dump(mode="json") for line in page.items])
        if (cursor := page.next_cursor) is None:
            break
    assert len(pages) > 1
    lines = [line for page in pages for line in page]
    distinct([{"key": (x["month"], x["funder_kind"], x["funder_id"])} for x in lines], "key")
    assert set(funders) <= {line["funder_id"] for line in lines}


LISTS = [
    ("driver", "/v1/wallet/lots"),
    ("driver", "/v1/wallet/history"),
    ("driver", "/v1/wallet/carriers"),
    ("driver", "/v1/wallet/carrier-orders"),
    ("driver", "/v1/wallet/catalogue"),
    ("driver", "/v1/wallet/exchange-orders"),
    ("operator", "/v1/operator/wallet/prices"),
    ("operator", "/v1/operator/wallet/breakage?since=2026-01-01&until=2026-02-01"),
    ("operator", "/v1/operator/wallet/expiring"),
    ("operator", "/v1/operator/wallet/carriers"),
    ("operator", "/v1/operator/wallet/catalogue"),
    ("merchant", "/v1/merchant/campaigns"),
    ("merchant", "/v1/merchant/data-use"),
    ("merchant", "/v1/merchant/exchange-orders"),
]


@pytest.mark.parametrize(("audience", "path"), LISTS)
async def test_a_cursor_that_is_not_the_lists_own_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, audience: str, path: str
) -> None:
    if audience == "operator":
        headers = bearer(operator_key)
    elif audience == "merchant":
        headers = (await Shop(http, settings).open()).merchant
    else:
        headers = (await driver(settings))[1]
    separator = "&" if "?" in path else "?"
    for cursor in ("not-a-cursor", "WyJsb3RzIiwxXQ", "W10"):
        answer = await http.get(f"{path}{separator}cursor={cursor}", headers=headers)
        assert_bad_cursor(answer)
