"""Merchants, partner platforms and embedding apps filling wallets, over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flowbill.db import Connection
from flowbill.periods import Calendar
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant
from tests.wallet.factories import Shop, balance_of, driver, idem
from wallet import promotions, service
from wallet.errors import NoCheckInFunding
from wallet.schemas import CampaignCreate

# The streak tests count days as Shanghai does (midnight is 16:00 UTC).
SHANGHAI = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)


async def test_a_merchant_buys_data_at_the_platform_price(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    _, key = await make_tenant(settings, role=Role.MERCHANT)
    merchant = bearer(key)
    priced = await http.put(
        "/v1/operator/wallet/prices/CNY",
        json={"minor_per_100mb": 600},
        headers=bearer(operator_key),
    )
    assert priced.status_code == 200, priced.text
    headers = idem(merchant, "buy-1")
    first = await http.post("/v1/merchant/data-purchases", json={"mb": 1250}, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["price_minor"] == 7500  # 12.5 × 6 CNY
    assert first.json()["data_bytes"] == 1250 * MB
    again = await http.post("/v1/merchant/data-purchases", json={"mb": 1250}, headers=headers)
    assert again.json() == first.json()
    other = await http.post("/v1/merchant/data-purchases", json={"mb": 100}, headers=headers)
    assert_problem(other, 409, "idempotency-key-reused")
    pool = (await http.get("/v1/merchant/pool", headers=merchant)).json()
    assert pool == {"data_bytes": 1250 * MB, "in_campaigns_bytes": 0}


@pytest.mark.parametrize(
    ("body", "headers_key"),
    [
        ({"mb": 0}, "k"),
        ({"mb": -100}, "k"),
        ({"mb": 99}, "k"),
        ({"mb": "lots"}, "k"),
        ({"mb": 100, "currency": "cny"}, "k"),
        ({"mb": 100, "extra": 1}, "k"),
        ({"mb": 100}, None),
        ({"mb": 100}, "bad key with spaces"),
    ],
)
async def test_bad_purchases_are_refused_and_change_nothing(
    http: httpx.AsyncClient, settings: Settings, body: dict[str, object], headers_key: str | None
) -> None:
    _, key = await make_tenant(settings, role=Role.MERCHANT)
    headers = bearer(key) if headers_key is None else idem(bearer(key), headers_key)
    answer = await http.post("/v1/merchant/data-purchases", json=body, headers=headers)
    assert_problem(answer, 422, "invalid-input")
    assert (await http.get("/v1/merchant/pool", headers=bearer(key))).json()["data_bytes"] == 0


async def test_a_currency_without_a_price_is_refused(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, key = await make_tenant(settings, role=Role.MERCHANT)
    answer = await http.post(
        "/v1/merchant/data-purchases",
        json={"mb": 100, "currency": "XTS"},
        headers=idem(bearer(key)),
    )
    assert_problem(answer, 404, "price-not-configured")


async def test_an_action_event_grants_once_however_often_it_arrives(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    campaign = await shop.campaign(validity_days=30)
    user, wallet = await driver(settings)
    deliveries = await asyncio.gather(
        *(shop.event(campaign, user, event_id="evt-favourite-1") for _ in range(20))
    )
    assert all(d.status_code == 200 for d in deliveries), [d.text for d in deliveries]
    assert sorted(d.json()["repeated"] for d in deliveries) == [False] + [True] * 19
    assert {d.json()["rewards"][0]["lot_id"] for d in deliveries} != {None}
    assert len({d.json()["rewards"][0]["lot_id"] for d in deliveries}) == 1
    assert await balance_of(http, wallet) == 10 * MB
    lots = (await http.get("/v1/wallet/lots", headers=wallet)).json()["items"]
    assert len(lots) == 1
    assert lots[0]["source"] == f"campaign:{campaign['campaign_id']}"
    expires = datetime.fromisoformat(lots[0]["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    status = (
        await http.get(f"/v1/merchant/campaigns/{campaign['campaign_id']}", headers=shop.merchant)
    ).json()
    assert status["budget_left_bytes"] == 90 * MB
    assert status["users_rewarded"] == 1


async def test_sharing_rewards_the_sharer_and_the_clicker(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    campaign = await shop.campaign(
        action="share_link", bytes_per_action=5 * MB, bytes_per_click=2 * MB
    )
    sharer, sharer_wallet = await driver(settings)
    clicker, clicker_wallet = await driver(settings)
    answer = await shop.event(campaign, sharer, clicked_by=clicker)
    assert answer.status_code == 200, answer.text
    assert [(r["role"], r["data_bytes"]) for r in answer.json()["rewards"]] == [
        ("actor", 5 * MB),
        ("clicker", 2 * MB),
    ]
    assert await balance_of(http, sharer_wallet) == 5 * MB
    assert await balance_of(http, clicker_wallet) == 2 * MB
    no_clicker = await shop.event(campaign, sharer)
    assert_problem(no_clicker, 422, "invalid-input")
    self_click = await shop.event(campaign, sharer, clicked_by=sharer)
    assert_problem(self_click, 422, "invalid-input")


async def test_refusals_name_their_reason_and_grant_nothing(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    campaign = await shop.campaign(per_user_limit=2, budget_bytes=30 * MB)
    user, wallet = await driver(settings)
    for _ in range(2):
        assert (await shop.event(campaign, user)).status_code == 200
    assert_problem(await shop.event(campaign, user), 409, "user-limit-reached")
    other, _ = await driver(settings)
    assert (await shop.event(campaign, other)).status_code == 200
    third, third_wallet = await driver(settings)
    assert_problem(await shop.event(campaign, third), 409, "budget-spent")
    assert await balance_of(http, third_wallet) == 0
    assert await balance_of(http, wallet) == 20 * MB
    assert_problem(await shop.event(campaign, str(uuid.uuid4())), 404, "unknown-user")
    wrong = await shop.event({**campaign, "action": "purchase"}, user)
    assert_problem(wrong, 422, "wrong-action")


async def test_ending_a_campaign_returns_its_budget_and_refuses_later_events(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open(mb=500)
    campaign = await shop.campaign(budget_bytes=200 * MB)
    assert (await http.get("/v1/merchant/pool", headers=shop.merchant)).json() == {
        "data_bytes": 300 * MB,
        "in_campaigns_bytes": 200 * MB,
    }
    user, _ = await driver(settings)
    assert (await shop.event(campaign, user)).status_code == 200
    url = f"/v1/merchant/campaigns/{campaign['campaign_id']}/end"
    ended = await http.post(url, headers=shop.merchant)
    assert ended.status_code == 200, ended.text
    assert ended.json()["running"] is False
    assert ended.json()["budget_left_bytes"] == 0
    assert (await http.post(url, headers=shop.merchant)).status_code == 200
    assert (await http.get("/v1/merchant/pool", headers=shop.merchant)).json() == {
        "data_bytes": 490 * MB,
        "in_campaigns_bytes": 0,
    }
    assert_problem(await shop.event(campaign, user), 409, "campaign-ended")


async def test_one_tenant_cannot_reach_another_tenants_campaigns(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    rival = await Shop(http, settings).open()
    campaign = await shop.campaign()
    user, _ = await driver(settings)
    # The rival's partner does not act for this shop.
    answer = await rival.event(campaign, user)
    assert_problem(answer, 404, "campaign-not-found")
    peek = await http.get(
        f"/v1/merchant/campaigns/{campaign['campaign_id']}", headers=rival.merchant
    )
    assert_problem(peek, 404, "campaign-not-found")
    end = await http.post(
        f"/v1/merchant/campaigns/{campaign['campaign_id']}/end", headers=rival.merchant
    )
    assert_problem(end, 404, "campaign-not-found")
    # A driver is not a partner.
    _, wallet = await driver(settings)
    as_driver = await http.post(
        "/v1/partner/action-events",
        json={"event_id": "x", "campaign_id": campaign["campaign_id"], "action": "favourite_shop",
              "user_id": user},
        headers=wallet,
    )  # fmt: skip
    assert_problem(as_driver, 403, "role-not-allowed")


@pytest.mark.parametrize(
    "spec",
    [
        {"bytes_per_action": 0},
        {"budget_bytes": -1},
        {"action": "favourite_shop", "bytes_per_click": MB},
        {"validity_days": 731},
        {"per_user_limit": 0},
        {"ends_at": "2020-01-01T00:00:00"},
        {"action": "teleport"},
    ],
)
async def test_bad_campaigns_are_refused(
    http: httpx.AsyncClient, settings: Settings, spec: dict[str, object]
) -> None:
    shop = await Shop(http, settings).open()
    body = {"name": "x", "action": "favourite_shop", "bytes_per_action": MB,
            "budget_bytes": 10 * MB, **spec}  # fmt: skip
    answer = await http.post("/v1/merchant/campaigns", json=body, headers=idem(shop.merchant))
    assert_problem(answer, 422, "invalid-input")


async def test_a_campaign_larger_than_the_pool_is_refused(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open(mb=100)
    body = {"name": "x", "action": "purchase", "bytes_per_action": MB, "budget_bytes": 101 * MB}
    answer = await http.post("/v1/merchant/campaigns", json=body, headers=idem(shop.merchant))
    assert_problem(answer, 409, "insufficient-balance")
    assert (await http.get("/v1/merchant/campaigns", headers=shop.merchant)).json()["items"] == []


async def test_checking_in_twice_a_day_grants_once(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    shop = await Shop(http, settings).open()
    await shop.campaign(action="check_in", bytes_per_action=MB, budget_bytes=500 * MB)
    _, app_key = await make_tenant(settings, role=Role.APP)
    user, wallet = await driver(settings)
    answers = await asyncio.gather(
        *(
            http.post("/v1/check-ins", json={"user_id": user}, headers=bearer(app_key))
            for _ in range(5)
        )
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    granted = sorted(a.json()["data_bytes"] for a in answers)
    assert granted == [0, 0, 0, 0, MB]
    assert {a.json()["streak"] for a in answers} == {1}
    assert answers[0].json()["tomorrow_bytes"] == MB
    assert await balance_of(http, wallet) == MB
    history = (await http.get("/v1/wallet/history", headers=wallet)).json()["items"]
    assert [(h["kind"], h["data_bytes"]) for h in history] == [("grant", MB)]
    assert history[0]["memo"]["streak"] == 1


async def test_streaks_earn_more_and_restart_after_a_missed_day(
    conn: Connection, settings: Settings
) -> None:
    merchant_id, _ = await make_tenant(settings, role=Role.MERCHANT)
    user_id, _ = await make_tenant(settings, role=Role.DRIVER)
    app_id, _ = await make_tenant(settings, role=Role.APP)
    merchant = uuid.UUID(merchant_id)
    start = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    await promotions.buy_data(conn, key=secrets.token_hex(8), merchant_id=merchant, mb=1000,
                              currency="CNY")  # fmt: skip
    await promotions.create_campaign(
        conn, key=secrets.token_hex(8), merchant_id=merchant, now=start - timedelta(days=1),
        spec=CampaignCreate(name="daily", action="check_in", bytes_per_action=MB,
                            budget_bytes=900 * MB),
    )  # fmt: skip
    days = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    granted = []
    for day in days:
        result = await promotions.check_in(
            conn, app_id=uuid.UUID(app_id), user_id=uuid.UUID(user_id),
            now=start + timedelta(days=day), calendar=SHANGHAI,
        )  # fmt: skip
        granted.append((result.streak, result.data_bytes // MB))
    assert granted == [
        (1, 1), (2, 1), (3, 5), (4, 1), (5, 1), (6, 1), (7, 10), (8, 1),
        (1, 1), (2, 1), (3, 5),
    ]  # fmt: skip
    # 23:30 in Shanghai is still the same calendar day as 00:30 of it.
    late = datetime(2026, 12, 14, 15, 30, tzinfo=UTC)
    early = datetime(2026, 12, 13, 16, 30, tzinfo=UTC)
    first = await promotions.check_in(
        conn, app_id=uuid.UUID(app_id), user_id=uuid.UUID(user_id), now=early, calendar=SHANGHAI
    )
    second = await promotions.check_in(
        conn, app_id=uuid.UUID(app_id), user_id=uuid.UUID(user_id), now=late, calendar=SHANGHAI
    )
    assert (first.day, first.already_checked_in) == (second.day, False)
    assert second.already_checked_in is True
    assert await service.check_books(conn) == []


async def test_check_in_without_a_funding_campaign_is_refused(
    conn: Connection, settings: Settings
) -> None:
    user_id, _ = await make_tenant(settings, role=Role.DRIVER)
    app_id, _ = await make_tenant(settings, role=Role.APP)
    # Before any campaign started, none can fund a check-in.
    with pytest.raises(NoCheckInFunding):
        await promotions.check_in(
            conn, app_id=uuid.UUID(app_id), user_id=uuid.UUID(user_id),
            now=datetime(2020, 1, 1, tzinfo=UTC), calendar=SHANGHAI,
        )  # fmt: skip


async def test_a_merchant_sees_who_used_its_data_and_the_books_balance(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    shop = await Shop(http, settings).open()
    campaign = await shop.campaign()
    user, _ = await driver(settings)
    assert (await shop.event(campaign, user)).status_code == 200
    use = (await http.get("/v1/merchant/data-use", headers=shop.merchant)).json()["items"]
    assert use == [
        {"user_id": user, "granted_bytes": 10 * MB, "used_bytes": 0, "expired_bytes": 0,
         "remaining_bytes": 10 * MB}
    ]  # fmt: skip
    books = (
        await http.get("/v1/operator/wallet/ledger-check", headers=bearer(operator_key))
    ).json()
    assert books == {"balanced": True, "problems": []}
