"""Placing an exchange order in one statement (migrations/0012): what it writes, what a
refusal leaves (nothing), repeats of a key, and stock and per-user limits under concurrency."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from flowbill.db import Connection
from flowbill.settings import Settings
from flowbill.units import MB
from tests.conftest import assert_problem, bearer
from tests.wallet.factories import Shop, balance_of, carrier, driver, funded_driver, idem
from wallet import exchange, service
from wallet.schemas import ExchangeOrderRequest


async def add_item(http: httpx.AsyncClient, operator_key: str, **spec: object) -> dict[str, object]:
    body = {"kind": "merchant_goods", "name": "Sticker", "sku": "sticker", "price_bytes": MB,
            **spec}  # fmt: skip
    made = await http.post("/v1/operator/wallet/catalogue", json=body, headers=bearer(operator_key))
    assert made.status_code == 201, made.text
    item: dict[str, object] = made.json()
    return item


async def goods(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, **spec: object
) -> dict[str, object]:
    """A merchant's goods, delivered by the merchant (no provider work after the order)."""
    shop = await Shop(http, settings).open()
    return await add_item(http, operator_key, merchant_id=shop.merchant_id, **spec)


async def order(
    http: httpx.AsyncClient, wallet: dict[str, str], item: dict[str, object], **extra: object
) -> httpx.Response:
    body = {"item_id": item["item_id"], **extra}
    return await http.post("/v1/wallet/exchange-orders", json=body, headers=idem(wallet))


async def footprint(conn: psycopg.AsyncConnection[tuple[object, ...]], user: str) -> list[int]:
    """What a user's orders have written: orders, their events, ledger transactions on the
    user's accounts; and spends without entries anywhere (a refusal must leave none)."""
    cur = await conn.execute(
        """
        SELECT (SELECT count(*) FROM exchange_orders WHERE user_id = %(u)s),
               (SELECT count(*) FROM exchange_order_events e
                JOIN exchange_orders o USING (order_id) WHERE o.user_id = %(u)s),
               (SELECT count(DISTINCT e.txn_id) FROM ledger_entries e
                JOIN ledger_accounts a USING (account_id) WHERE a.owner = %(u)s),
               (SELECT count(*) FROM ledger_transactions t WHERE t.kind = 'spend'
                AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.txn_id = t.txn_id))
        """,
        {"u": user},
    )
    row = await cur.fetchone()
    assert row is not None
    return [int(str(v)) for v in row]


async def test_the_spend_is_claimed_as_the_ledger_claims_it(
    conn: Connection, http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    # The function writes the ledger transaction itself: its request digest and memo must be
    # the ones wallet.service.claim would have written for the same spend.
    item = await goods(http, settings, operator_key, price_bytes=3 * MB)
    user, _ = await funded_driver(http, settings, mb=10)
    placed, _ = await exchange.place_order(
        conn, user=user, key="digest-1", body=ExchangeOrderRequest(item_id=item["item_id"],
        quantity=2), now=datetime.now(UTC),
    )  # fmt: skip
    cur = await conn.execute(
        "SELECT idempotency_key, kind, request_digest, memo FROM ledger_transactions"
        " WHERE idempotency_key = %s",
        (f"exchange-order:{placed.order_id}:spend",),
    )
    found = await cur.fetchone()
    assert found is not None
    key, kind, digest, memo = found
    assert kind == "spend"
    assert bytes(digest) == service._digest(
        "spend", user=user, data_bytes=6 * MB, to_kind="in_flight", to_owner="exchange"
    )
    assert memo == {"exchange_order": str(placed.order_id), "item": "Sticker", "quantity": 2}
    # And `claim` agrees: the same request under the same key is a repeat, not a reuse.
    txn_id, created = await service.claim(
        conn, key=key, kind="spend", user=user, data_bytes=6 * MB, to_kind="in_flight",
        to_owner="exchange",
    )  # fmt: skip
    assert not created
    assert placed.state == "paid"
    assert [e.state for e in placed.events] == ["placed", "paid"]
    assert await service.balance(conn, user=user) == 4 * MB
    assert await service.check_books(conn) == []
    assert txn_id > 0


async def test_a_repeated_key_returns_the_first_order_and_takes_once(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await goods(http, settings, operator_key, stock=10)
    _, wallet = await funded_driver(http, settings, mb=10)
    headers = idem(wallet, "repeat-me")
    body = {"item_id": item["item_id"]}
    answers = await asyncio.gather(
        *(http.post("/v1/wallet/exchange-orders", json=body, headers=headers) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    firsts = {json.dumps(a.json(), sort_keys=True) for a in answers}
    assert len(firsts) == 1, firsts
    assert await balance_of(http, wallet) == 9 * MB
    catalogue = (await http.get("/v1/wallet/catalogue", headers=wallet)).json()["items"]
    assert next(i for i in catalogue if i["item_id"] == item["item_id"])["stock"] == 9
    other = await http.post(
        "/v1/wallet/exchange-orders", json={**body, "quantity": 2}, headers=headers
    )
    assert_problem(other, 409, "idempotency-key-reused")
    assert await balance_of(http, wallet) == 9 * MB


async def test_a_refusal_writes_nothing(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection[tuple[object, ...]],
) -> None:
    carrier_id = await carrier(http, operator_key)
    scarce = await goods(http, settings, operator_key, stock=1)
    capped = await goods(http, settings, operator_key, per_user_limit=1)
    dear = await goods(http, settings, operator_key, price_bytes=500 * MB)
    by_carrier = await add_item(
        http, operator_key, kind="red_envelope", name="Red envelope", sku="env-1",
        price_bytes=100 * MB, carrier_prices={carrier_id: 5 * MB},
    )  # fmt: skip
    user, wallet = await funded_driver(http, settings, mb=20)
    assert (await order(http, wallet, capped)).status_code == 202
    before = await footprint(committed_conn, user)
    refusals = [
        (await order(http, wallet, scarce, quantity=2), 409, "out-of-stock"),
        (await order(http, wallet, capped), 409, "item-limit-reached"),
        (await order(http, wallet, dear), 409, "insufficient-balance"),
        (await order(http, wallet, by_carrier), 422, "carrier-required"),
        (await order(http, wallet, by_carrier, carrier_id="cm-nowhere"), 404,
         "carrier-not-found"),
        (await order(http, wallet, {"item_id": "00000000-0000-0000-0000-000000000000"}), 404,
         "item-not-found"),
    ]  # fmt: skip
    for answer, status, kind in refusals:
        assert_problem(answer, status, kind)
    assert await footprint(committed_conn, user) == before
    assert await balance_of(http, wallet) == 19 * MB
    _, empty = await driver(settings)
    assert_problem(await order(http, empty, scarce), 409, "insufficient-balance")
    catalogue = (await http.get("/v1/wallet/catalogue", headers=wallet)).json()["items"]
    assert next(i for i in catalogue if i["item_id"] == scarce["item_id"])["stock"] == 1
    placed = await order(http, wallet, by_carrier, carrier_id=carrier_id)
    assert placed.status_code == 202, placed.text
    assert placed.json()["unit_bytes"] == 5 * MB
    books = await http.get("/v1/operator/wallet/ledger-check", headers=bearer(operator_key))
    assert books.json() == {"balanced": True, "problems": []}


async def test_stock_holds_under_concurrent_orders_of_many_users(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await goods(http, settings, operator_key, stock=5)
    wallets = [(await funded_driver(http, settings, mb=5))[1] for _ in range(12)]
    answers = await asyncio.gather(*(order(http, wallet, item) for wallet in wallets))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 5 + [409] * 7, [a.text for a in answers if a.status_code >= 500]
    assert {a.json()["type"].rsplit("/", 1)[1] for a in answers if a.status_code == 409} == {
        "out-of-stock"
    }
    catalogue = (await http.get("/v1/wallet/catalogue", headers=wallets[0])).json()["items"]
    assert next(i for i in catalogue if i["item_id"] == item["item_id"])["stock"] == 0
    spent = [await balance_of(http, wallet) for wallet in wallets]
    assert sorted(spent) == [4 * MB] * 5 + [5 * MB] * 7


async def test_the_per_user_limit_holds_under_concurrent_orders(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await goods(http, settings, operator_key, per_user_limit=3)
    _, wallet = await funded_driver(http, settings, mb=20)
    answers = await asyncio.gather(*(order(http, wallet, item) for _ in range(10)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 3 + [409] * 7, [a.text for a in answers if a.status_code >= 500]
    assert await balance_of(http, wallet) == 17 * MB
    # A returned unit no longer counts against the limit.
    first = next(a.json()["order_id"] for a in answers if a.status_code == 202)
    shop_orders = f"/v1/wallet/exchange-orders/{first}/returns"
    assert (await http.post(shop_orders, json={"quantity": 1}, headers=idem(wallet))).is_success
    assert (await order(http, wallet, item)).status_code == 202
    assert_problem(await order(http, wallet, item), 409, "item-limit-reached")


@pytest.mark.parametrize("role", ["merchant", "bad key"])
async def test_only_drivers_redeem(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, role: str
) -> None:
    item = await goods(http, settings, operator_key)
    if role == "merchant":
        shop = await Shop(http, settings).open()
        answer = await order(http, shop.merchant, item)
        assert_problem(answer, 403, "role-not-allowed")
    else:
        answer = await order(http, bearer("fbk_" + "a" * 16 + "_nope"), item)
        assert_problem(answer, 401, "invalid-api-key")
