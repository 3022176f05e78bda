"""The driver page in a real browser (headless Chromium), as a driver uses it: sign in, read
the usage by app and payer, the wallet, redeem, top up, switch language; the numbers on the
page are checked against the API's. Screenshots go to test-output/web/."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from api.web.i18n import EN, ZH
from flowbill.settings import Settings
from flowbill.units import MB
from tests.billing.cars import Car, bill
from tests.wallet.factories import behave, carrier, funded_driver
from tests.wallet.test_exchange_api import add_item
from tests.web.conftest import Page, api_key, follow_link, sign_in_link


def mb(data_bytes: int) -> str:
    return f"{data_bytes / MB:,.2f} MB"


@pytest.fixture(autouse=True)
async def normal_gateway(gateway_url: str) -> None:
    await behave(gateway_url)


async def api(http: httpx.AsyncClient, headers: dict[str, str], path: str) -> Any:
    answer = await http.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def name_of(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    return str((await api(http, headers, "/v1/me"))["name"])


async def cell(page: Page, iccid: str, app: str, payer: str) -> int:
    css = f"#sim-{iccid} table.usage-apps tr[data-app='{app}'] td[data-payer='{payer}']"
    bytes_ = await page.attribute(css, "data-bytes")
    assert await page.text(css) == mb(int(bytes_))
    return int(bytes_)


async def assert_wallet_matches_api(
    page: Page, http: httpx.AsyncClient, headers: dict[str, str]
) -> int:
    balance = await api(http, headers, "/v1/wallet")
    assert int(await page.attribute("#balance", "data-bytes")) == balance["data_bytes"]
    assert await page.text("#balance") == mb(balance["data_bytes"])
    lots = (await api(http, headers, "/v1/wallet/lots"))["items"]
    shown = [
        (int(await page.call(li.get_attribute, "data-lot-id") or 0),
         int(await page.call(li.get_attribute, "data-bytes") or 0),
         await page.call(li.get_attribute, "data-expires-on"))
        for li in await page.all("#lots li")
    ]  # fmt: skip
    assert shown == [(lot["lot_id"], lot["remaining_bytes"], lot["expires_on"]) for lot in lots]
    history = (await api(http, headers, "/v1/wallet/history?limit=20"))["items"]
    rows = await page.all("#history tbody tr")
    assert [int(await page.call(r.get_attribute, "data-txn-id") or 0) for r in rows] == [
        h["txn_id"] for h in history
    ]
    return int(balance["data_bytes"])


async def test_the_usage_by_app_and_payer_and_the_wallet_equal_the_api(
    page: Page,
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    ingest_workers: object,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=20)
    await car.send(
        committed_conn,
        [car.report({"telematics": 3 * MB, "nav.amap": 2 * MB, "music.qq": MB}),
         car.report({"wifi.hotspot": 5 * MB, "video.iqiyi": 30 * MB, "telematics": MB})],
    )  # fmt: skip
    await bill(settings)

    await page.open("/sign-in")
    await page.submit("sign-in", {"api_key": api_key(car.driver)})
    assert await page.text("h1") == EN["title"]
    assert await page.charts_drawn() == 2

    iccid = car.iccid
    automaker = f"sponsor:{car.automaker_id}"
    assert await cell(page, iccid, "telematics", automaker) == 4 * MB
    assert await cell(page, iccid, "nav.amap", f"sponsor:{car.map_vendor_id}") == 2 * MB
    assert await cell(page, iccid, "music.qq", f"sponsor:{car.music_id}") == MB
    assert await cell(page, iccid, "wifi.hotspot", "me") == 5 * MB
    assert await cell(page, iccid, "video.iqiyi", "me") == 30 * MB
    assert await cell(page, iccid, "video.iqiyi", "total") == 30 * MB
    header = f"#sim-{iccid} table.usage-apps th[data-payer='{automaker}']"
    assert await page.text(header) == await name_of(http, car.automaker)

    # What the driver paid equals the driver's statement of the month.
    month = await page.attribute("#month", "data-month")
    statement = await api(http, car.driver, f"/v1/driver/statements/{month}")
    lines = [line for line in statement["lines"] if line["iccid"] == iccid]
    paid = f"#sim-{iccid} .paid-by-me"
    assert (
        int(await page.attribute(paid, "data-wallet-bytes"))
        == sum(line["wallet_bytes"] for line in lines)
        == 20 * MB
    )
    assert (
        int(await page.attribute(paid, "data-overage-bytes"))
        == sum(line["overage_bytes"] for line in lines)
        == 15 * MB
    )
    # The day-by-day table adds up to the same month.
    days = await page.all(f"#sim-{iccid} table.usage-days td[data-payer='total']")
    by_day = [int(await page.call(d.get_attribute, "data-bytes") or 0) for d in days]
    assert sum(by_day) == 42 * MB
    assert len(by_day) >= 28

    # Blocked apps as the coverage state says (the wallet is dry: its apps are blocked).
    vehicles = (await api(http, car.driver, "/v1/driver/vehicles"))["items"]
    assert [v["vehicle"]["vin"] for v in vehicles] == [car.vin]
    blocked = vehicles[0]["coverage"][iccid]["blocked"]
    assert "wifi.hotspot" in blocked
    assert (await page.attribute(f"#sim-{iccid} .blocked", "data-blocked")).split() == blocked

    assert await assert_wallet_matches_api(page, http, car.driver) == 0
    await page.screenshot("usage-and-wallet")


async def test_redeeming_changes_the_balance(
    page: Page, http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    item = await add_item(
        http, operator_key, price_bytes=30 * MB, sku="web-redeem", name="Ride-hailing coupon"
    )
    _, headers = await funded_driver(http, settings, mb=100)
    await page.sign_in_with_link(await sign_in_link(http, headers))
    assert await assert_wallet_matches_api(page, http, headers) == 100 * MB

    await page.submit("redeem", {"redeem-item": str(item["item_id"]), "redeem-quantity": "1"})
    notice = await page.text("#notice")
    assert "Ride-hailing coupon" in notice
    assert mb(30 * MB) in notice
    assert await assert_wallet_matches_api(page, http, headers) == 70 * MB
    assert await page.attribute("#history tbody tr", "data-bytes") == str(-30 * MB)
    await page.screenshot("redeemed")


async def test_an_app_is_blocked_once_the_wallet_runs_dry(
    page: Page,
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    ingest_workers: object,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=10)
    carrier_id = await carrier(http, operator_key)
    await car.send(committed_conn, [car.report({"telematics": MB})])
    await bill(settings)
    await page.sign_in_with_link(await sign_in_link(http, car.driver))
    assert await page.all(f"#sim-{car.iccid} .not-blocked")

    await page.submit(
        "top-up",
        {"top-up-carrier": carrier_id, "top-up-package": "10", "top-up-phone": "13800138000"},
    )
    assert "138****8000" in await page.text("#notice")
    assert await assert_wallet_matches_api(page, http, car.driver) == 0

    await bill(settings)
    await page.open(f"/driver/sims/{car.iccid}")
    blocked = (await page.attribute(f"#sim-{car.iccid} .blocked", "data-blocked")).split()
    assert "wifi.hotspot" in blocked
    vehicles = (await api(http, car.driver, "/v1/driver/vehicles"))["items"]
    assert blocked == vehicles[0]["coverage"][car.iccid]["blocked"]
    await page.screenshot("blocked-when-dry")


async def test_switching_the_language(
    page: Page, http: httpx.AsyncClient, settings: Settings
) -> None:
    _, headers = await funded_driver(http, settings, mb=1234)
    await page.sign_in_with_link(await sign_in_link(http, headers))
    assert await page.attribute("html", "lang") == "en"

    await page.click_link("lang-zh")
    assert await page.attribute("html", "lang") == "zh-CN"
    assert await page.text("h1") == ZH["title"]
    assert await page.text("#balance") == "1,234.00 MB"
    assert "年" in await page.text("#lots li")
    await page.open("/driver")  # the choice is kept
    assert await page.text("#wallet h2") == ZH["wallet"]
    await page.screenshot("chinese")

    await page.click_link("lang-en")
    assert await page.text("h1") == EN["title"]


async def test_bad_form_input_shows_the_apis_error(
    page: Page, http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, headers = await funded_driver(http, settings, mb=100)
    await page.sign_in_with_link(await sign_in_link(http, headers))

    await page.submit(
        "top-up", {"top-up-carrier": carrier_id, "top-up-package": "10", "top-up-phone": "12345"}
    )
    assert await page.text("#problem .problem-title") == "Invalid input"
    assert "phone" in await page.text("#problem .problem-detail")

    await page.submit(
        "top-up",
        {"top-up-carrier": carrier_id, "top-up-package": "7", "top-up-phone": "13800138000"},
    )
    body = {"carrier_id": carrier_id, "phone": "13800138000", "package_mb": 7}
    refused = await http.post(
        "/v1/wallet/top-ups", json=body, headers={**headers, "Idempotency-Key": "web-bad-1"}
    )
    assert refused.status_code == 422
    assert await page.text("#problem .problem-detail") == refused.json()["detail"]
    assert await page.text("#problem .problem-title") == refused.json()["title"]
    assert await page.attribute("#top-up-phone", "value") == "13800138000"
    await page.screenshot("bad-input")

    await page.click_link("lang-zh")
    await page.submit("top-up", {"top-up-package": "7", "top-up-phone": "13800138000"})
    assert await page.text("#problem .problem-title") == "该运营商不提供此流量包"
    assert await assert_wallet_matches_api(page, http, headers) == 100 * MB


async def test_a_link_signs_in_with_a_press_and_sign_out_everywhere_ends_every_session(
    page: Page, http: httpx.AsyncClient, settings: Settings, api_url: str
) -> None:
    _, headers = await funded_driver(http, settings, mb=10)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as other_browser:
        assert (await follow_link(other_browser, await sign_in_link(http, headers))).is_redirect
        assert (await other_browser.get("/driver")).status_code == 200

        link = await sign_in_link(http, headers)
        await page.open(link.removeprefix(page.base_url))
        assert await name_of(http, headers) in await page.text("#link-account")
        await page.screenshot("sign-in-link")
        await page.submit("sign-in")
        assert await page.text("h1") == EN["title"]

        await page.submit("sign-out-everywhere")
        assert await page.text("#notice") == EN["signed_out_everywhere"]
        assert (await other_browser.get("/driver")).status_code == 303
    await page.open("/driver")
    assert await page.text("h1") == EN["sign_in_title"]
    await page.open(link.removeprefix(page.base_url))
    assert (await page.attribute("#problem", "data-type")).endswith("/sign-in-link-expired")
    assert not await page.all("#link-sign-in-form")
