"""The driver page's sessions, CSRF protection, tenancy and idempotent forms, over plain HTTP
(what a browser would send, without one)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.web import templating
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.billing.cars import Car
from tests.conftest import bearer, make_tenant
from tests.wallet.factories import balance_of, funded_driver
from tests.wallet.test_exchange_api import add_item
from tests.web.conftest import (
    api_key,
    assert_page_problem,
    follow_link,
    hidden,
    sign_in_link,
)


@pytest.fixture
async def browserless(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with its own cookie jar, that does not follow redirects."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        yield client


async def signed_in(
    client: httpx.AsyncClient, http: httpx.AsyncClient, headers: dict[str, str]
) -> httpx.Response:
    answer = await follow_link(client, await sign_in_link(http, headers))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/driver"
    return answer


async def test_a_one_time_link_signs_in_once_with_a_safe_cookie(
    http: httpx.AsyncClient, browserless: httpx.AsyncClient, settings: Settings
) -> None:
    _, headers = await funded_driver(http, settings, mb=50)
    url = await sign_in_link(http, headers)
    assert url.startswith(f"{settings.public_url}/sign-in/link?token=")
    path = url.removeprefix(str(settings.public_url))

    shown = await browserless.get(path)
    assert shown.status_code == 200
    assert "flowbill_session" not in shown.headers.get("set-cookie", "")
    first = await follow_link(browserless, url)
    assert first.status_code == 303
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("flowbill_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # served over http here: Secure only over https

    page = await browserless.get("/driver")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert re.fullmatch(r"app;dur=[0-9.]+", page.headers["server-timing"])
    assert f'data-bytes="{50 * MB}"' in page.text

    async with httpx.AsyncClient(base_url=str(browserless.base_url)) as other:
        assert_page_problem(await other.get(path), 410, "sign-in-link-expired")
        assert (await other.get("/driver")).headers["location"] == "/sign-in"


async def test_the_page_needs_a_session_and_sign_out_ends_it(
    http: httpx.AsyncClient, browserless: httpx.AsyncClient, settings: Settings
) -> None:
    assert (await browserless.get("/driver")).status_code == 303
    _, headers = await funded_driver(http, settings, mb=10)
    await signed_in(browserless, http, headers)
    page = await browserless.get("/driver")
    token = browserless.cookies["flowbill_session"]

    refused = await browserless.post("/sign-out", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert (await browserless.get("/driver")).status_code == 200

    out = await browserless.post("/sign-out", data={"csrf": hidden(page.text, "csrf")})
    assert out.status_code == 303
    assert out.headers["location"] == "/sign-in?signed_out=true"
    browserless.cookies.set("flowbill_session", token)  # the old cookie, replayed
    assert (await browserless.get("/driver")).headers["location"] == "/sign-in"


async def test_signing_in_with_a_key_needs_the_form_token_and_a_driver(
    http: httpx.AsyncClient, browserless: httpx.AsyncClient, settings: Settings
) -> None:
    _, headers = await funded_driver(http, settings, mb=10)
    form = await browserless.get("/sign-in")
    csrf = hidden(form.text, "csrf")

    forged = await browserless.post(
        "/sign-in", data={"csrf": "x" * 43, "api_key": api_key(headers)}
    )
    assert forged.status_code == 403
    _, sponsor_key = await make_tenant(settings, role=Role.SPONSOR)
    sponsor = await browserless.post("/sign-in", data={"csrf": csrf, "api_key": sponsor_key})
    assert sponsor.status_code == 401
    wrong = await browserless.post("/sign-in", data={"csrf": csrf, "api_key": "fbk_nope"})
    assert wrong.status_code == 401
    cross_site = await browserless.post(
        "/sign-in", data={"csrf": csrf, "api_key": api_key(headers)},
        headers={"Origin": "http://evil.example"},
    )  # fmt: skip
    assert cross_site.status_code == 403

    done = await browserless.post(
        "/sign-in", data={"csrf": csrf, "api_key": api_key(headers), "next": "//evil.example"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/driver"
    assert (await browserless.get("/driver")).status_code == 200


async def test_a_driver_sees_only_their_own_sims(
    http: httpx.AsyncClient,
    browserless: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=10)
    _, stranger = await funded_driver(http, settings, mb=10)

    await signed_in(browserless, http, car.driver)
    own = await browserless.get(f"/driver/sims/{car.iccid}")
    assert own.status_code == 200
    assert car.vin in own.text

    await signed_in(browserless, http, stranger)
    foreign = await browserless.get(f"/driver/sims/{car.iccid}")
    assert foreign.status_code == 404
    assert car.vin not in foreign.text
    assert car.vin not in (await browserless.get("/driver")).text


async def test_a_form_sent_twice_spends_once_and_a_forged_one_not_at_all(
    http: httpx.AsyncClient,
    browserless: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
) -> None:
    item = await add_item(http, operator_key, price_bytes=10 * MB, sku="web-twice")
    _, headers = await funded_driver(http, settings, mb=50)
    await signed_in(browserless, http, headers)
    page = (await browserless.get("/driver")).text
    form = {
        "csrf": hidden(page, "csrf", "redeem-form"),
        "idempotency_key": hidden(page, "idempotency_key", "redeem-form"),
        "item_id": str(item["item_id"]),
        "quantity": "1",
    }

    forged = await browserless.post("/driver/redemptions", data={**form, "csrf": "forged"})
    assert forged.status_code == 403
    assert await balance_of(http, headers) == 50 * MB

    first = await browserless.post("/driver/redemptions", data=form)
    second = await browserless.post("/driver/redemptions", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert await balance_of(http, headers) == 40 * MB
    shown = await browserless.get(first.headers["location"])
    assert 'id="notice"' in shown.text


async def test_without_the_chart_library_the_tables_remain(
    http: httpx.AsyncClient,
    browserless: httpx.AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, headers = await funded_driver(http, settings, mb=10)
    await signed_in(browserless, http, headers)
    monkeypatch.setattr(templating, "CHART_FILE", Path("/nonexistent/chart.umd.js"))
    page = await browserless.get("/driver")
    assert page.status_code == 200
    assert "chart.umd.js" not in page.text
    assert "Charts are unavailable" in page.text
    assert 'id="balance"' in page.text


async def test_the_language_follows_the_browser_then_the_switch(
    http: httpx.AsyncClient, browserless: httpx.AsyncClient, settings: Settings
) -> None:
    _, headers = await funded_driver(http, settings, mb=10)
    await signed_in(browserless, http, headers)
    chinese = await browserless.get("/driver", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in chinese.text
    assert "我的钱包" in chinese.text
    assert '<html lang="en">' in (await browserless.get("/driver?lang=en")).text
    switched = await browserless.get("/lang/en?next=/driver")
    assert switched.status_code == 303
    page = await browserless.get("/driver", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in page.text
    assert (await browserless.get("/lang/en?next=https://evil.example")).headers[
        "location"
    ] == "/driver"


async def test_an_api_key_makes_no_sign_in_link_for_others(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, sponsor_key = await make_tenant(settings, role=Role.SPONSOR)
    refused = await http.post("/v1/me/sign-in-links", headers=bearer(sponsor_key))
    assert refused.status_code == 403
