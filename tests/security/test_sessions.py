"""Attacks on the driver page's sessions and one-time sign-in links, over HTTP: a session
outliving the key that opened it or its tenant, a link burnt by a GET (a link scanner), a
link posted without the page's CSRF token (login CSRF), an expired or used link, and a key
revoked by another process while this one still remembers it (the 5 s key cache)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from flowbill.settings import Settings
from flowbill.units import MB
from tenants import service as tenants
from tests.conftest import assert_problem, bearer
from tests.wallet.factories import balance_of, funded_driver
from tests.wallet.test_exchange_api import add_item
from tests.web.conftest import api_key, assert_page_problem, follow_link, hidden, sign_in_link

Browsers = list[httpx.AsyncClient]


@pytest.fixture
async def browsers(api_url: str) -> AsyncIterator[Browsers]:
    """Four clients with cookie jars of their own (browsers), following no redirect."""
    clients = [httpx.AsyncClient(base_url=api_url, timeout=10) for _ in range(4)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def driver(http: httpx.AsyncClient, settings: Settings) -> tuple[str, dict[str, str]]:
    """A driver (tenant id, bearer headers) whose wallet holds 10 MB."""
    return await funded_driver(http, settings, mb=10)


def key_id(key: str) -> str:
    return key.split("_")[1]


async def signed_in(browser: httpx.AsyncClient) -> bool:
    page = await browser.get("/driver")
    if page.status_code == 303:
        assert page.headers["location"].startswith("/sign-in")
        return False
    assert page.status_code == 200, page.text
    return True


async def sign_in_with_key(browser: httpx.AsyncClient, key: str) -> None:
    form = await browser.get("/sign-in")
    done = await browser.post("/sign-in", data={"csrf": hidden(form.text, "csrf"), "api_key": key})
    assert done.status_code == 303, done.text


async def sign_in_with_a_link(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert (await follow_link(browser, await sign_in_link(http, headers))).status_code == 303


async def second_key(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    issued = await http.post("/v1/me/keys", json={"label": "second"}, headers=headers)
    assert issued.status_code == 201, issued.text
    return bearer(issued.json()["api_key"])


async def try_to_redeem(
    browser: httpx.AsyncClient, page_html: str, item: dict[str, object]
) -> httpx.Response:
    """What a stale page's redemption form would send."""
    return await browser.post(
        "/driver/redemptions",
        data={"csrf": hidden(page_html, "csrf", "redeem-form"),
              "idempotency_key": hidden(page_html, "idempotency_key", "redeem-form"),
              "item_id": str(item["item_id"]), "quantity": "1"},
    )  # fmt: skip


async def link_used_at(conn: psycopg.AsyncConnection, tenant_id: str) -> list[object]:
    cur = await conn.execute(
        "SELECT used_at FROM web_sign_in_links WHERE tenant_id = %s ORDER BY created_at",
        (tenant_id,),
    )
    return [row[0] for row in await cur.fetchall()]


@pytest.mark.parametrize("revoker", ["the driver", "the operator"])
async def test_revoking_a_key_ends_the_sessions_it_opened_at_once(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    browsers: Browsers,
    revoker: str,
) -> None:
    tenant_id, headers = await funded_driver(http, settings, mb=50)
    other_key = await second_key(http, headers)
    item = await add_item(http, operator_key, price_bytes=10 * MB, sku=secrets.token_hex(6))
    by_form, by_link, by_other_key, unused = browsers
    await sign_in_with_key(by_form, api_key(headers))
    await sign_in_with_a_link(by_link, http, headers)
    await sign_in_with_a_link(by_other_key, http, other_key)
    stale_page = (await by_form.get("/driver")).text
    unused_link = await sign_in_link(http, headers)

    path = f"/v1/me/keys/{key_id(api_key(headers))}"
    if revoker == "the operator":
        path = f"/v1/operator/tenants/{tenant_id}/keys/{key_id(api_key(headers))}"
    revoked = await http.delete(path, headers=other_key if revoker == "the driver" else bearer(
        operator_key))  # fmt: skip
    assert revoked.status_code == 200, revoked.text

    assert not await signed_in(by_form)
    assert not await signed_in(by_link)
    assert await signed_in(by_other_key)  # another key's session is not this key's
    refused = await try_to_redeem(by_form, stale_page, item)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/sign-in")
    assert_page_problem(await unused.get(unused_link.removeprefix(str(unused.base_url))), 401,
                        "sign-in-refused")  # fmt: skip
    assert not await signed_in(unused)
    assert await balance_of(http, other_key) == 50 * MB


async def test_disabling_the_tenant_ends_its_sessions_for_good(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    browsers: Browsers,
) -> None:
    tenant_id, headers = await funded_driver(http, settings, mb=50)
    item = await add_item(http, operator_key, price_bytes=10 * MB, sku=secrets.token_hex(6))
    browser, bystander = browsers[:2]
    await sign_in_with_a_link(browser, http, headers)
    stale_page = (await browser.get("/driver")).text
    _, other_headers = await funded_driver(http, settings, mb=10)
    await sign_in_with_a_link(bystander, http, other_headers)

    operator = bearer(operator_key)
    disabled = await http.post(f"/v1/operator/tenants/{tenant_id}/disable", headers=operator)
    assert disabled.status_code == 200, disabled.text
    assert not await signed_in(browser)
    assert await signed_in(bystander)
    refused = await try_to_redeem(browser, stale_page, item)
    assert refused.headers["location"].startswith("/sign-in")

    enabled = await http.post(f"/v1/operator/tenants/{tenant_id}/enable", headers=operator)
    assert enabled.status_code == 200, enabled.text
    assert not await signed_in(browser)  # ended, not paused
    assert (await try_to_redeem(browser, stale_page, item)).status_code == 303
    assert await balance_of(http, headers) == 50 * MB


async def test_sign_out_everywhere_ends_every_session_of_the_tenant_and_no_other(
    http: httpx.AsyncClient,
    settings: Settings,
    driver: tuple[str, dict[str, str]],
    browsers: Browsers,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    tenant_id, headers = driver
    other_key = await second_key(http, headers)
    phone, laptop, unused, bystander = browsers
    await sign_in_with_a_link(phone, http, headers)
    await sign_in_with_key(laptop, api_key(other_key))
    unused_link = await sign_in_link(http, headers)
    _, other_headers = await funded_driver(http, settings, mb=10)
    await sign_in_with_a_link(bystander, http, other_headers)

    ended = await http.post("/v1/me/sessions/end-all", headers=headers)
    assert ended.status_code == 200, ended.text
    assert ended.json() == {"ended_sessions": 2}
    assert not await signed_in(phone)
    assert not await signed_in(laptop)
    assert await signed_in(bystander)
    assert_page_problem(await unused.get(unused_link.removeprefix(str(unused.base_url))), 401,
                        "sign-in-refused")  # fmt: skip
    assert None not in await link_used_at(committed_conn, tenant_id)  # unused ones are gone
    # The keys keep working: signing out is not revoking.
    assert (await http.get("/v1/me", headers=headers)).status_code == 200
    again = await http.post("/v1/me/sessions/end-all", headers=other_key)
    assert again.json() == {"ended_sessions": 0}


async def test_the_page_button_signs_out_everywhere_with_its_csrf_token_only(
    http: httpx.AsyncClient, driver: tuple[str, dict[str, str]], browsers: Browsers
) -> None:
    _, headers = driver
    here, elsewhere = browsers[:2]
    await sign_in_with_a_link(here, http, headers)
    await sign_in_with_a_link(elsewhere, http, headers)
    page = (await here.get("/driver")).text
    assert 'formaction="/sign-out-everywhere"' in page

    forged = await here.post("/sign-out-everywhere", data={"csrf": "forged"})
    assert_page_problem(forged, 403, "csrf")
    cross_site = await here.post(
        "/sign-out-everywhere", data={"csrf": hidden(page, "csrf")},
        headers={"Origin": "http://evil.example"},
    )  # fmt: skip
    assert_page_problem(cross_site, 403, "csrf")
    assert await signed_in(here)
    assert await signed_in(elsewhere)

    out = await here.post("/sign-out-everywhere", data={"csrf": hidden(page, "csrf")})
    assert out.status_code == 303
    assert out.headers["location"] == "/sign-in?signed_out=everywhere"
    assert not await signed_in(here)
    assert not await signed_in(elsewhere)
    notice = await here.get(out.headers["location"])
    assert "signed out on every browser" in notice.text


async def test_a_get_never_consumes_a_link_and_a_post_uses_it_once(
    http: httpx.AsyncClient,
    driver: tuple[str, dict[str, str]],
    browsers: Browsers,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    tenant_id, headers = driver
    scanner, browser, replayer = browsers[:3]
    url = await sign_in_link(http, headers)
    path = url.removeprefix(str(scanner.base_url))
    name = (await http.get("/v1/me", headers=headers)).json()["name"]

    for client in (scanner, scanner, browser):
        shown = await client.get(path)
        assert shown.status_code == 200
        assert name in shown.text  # whose account it opens, before anyone presses
        assert 'action="/sign-in/link"' in shown.text
        assert "flowbill_session" not in shown.headers.get("set-cookie", "")
    assert await link_used_at(committed_conn, tenant_id) == [None]
    assert not await signed_in(scanner)

    page = await browser.get(path)
    form = {"csrf": hidden(page.text, "csrf"), "token": hidden(page.text, "token")}
    first = await browser.post("/sign-in/link", data=form)
    assert first.status_code == 303
    assert first.headers["location"] == "/driver"
    assert await signed_in(browser)
    assert (await link_used_at(committed_conn, tenant_id))[0] is not None

    # Signing in spent the browser's sign-in form token: the same post again is refused.
    assert_page_problem(await browser.post("/sign-in/link", data=form), 403, "csrf")
    # The link posted by another browser with a valid form token of its own opens nothing.
    shown_used = await replayer.get(path)
    assert_page_problem(shown_used, 410, "sign-in-link-expired")
    replayed = await replayer.post(
        "/sign-in/link", data={**form, "csrf": replayer.cookies["flowbill_sign_in_csrf"]}
    )
    assert_page_problem(replayed, 410, "sign-in-link-expired")
    assert "used already" in replayed.text
    assert not await signed_in(replayer)


async def test_a_link_posted_without_the_pages_csrf_token_is_refused_and_stays_unused(
    http: httpx.AsyncClient,
    driver: tuple[str, dict[str, str]],
    browsers: Browsers,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    """Login CSRF: an attacker's site posts its own link's token from the victim's browser,
    which holds no sign-in cookie of the attacker's making."""
    tenant_id, headers = driver
    victim = browsers[0]
    url = await sign_in_link(http, headers)
    page = await victim.get(url.removeprefix(str(victim.base_url)))
    token = hidden(page.text, "token")
    csrf = hidden(page.text, "csrf")

    attempts = [
        ({"token": token}, {}),
        ({"token": token, "csrf": "x" * 43}, {}),
        ({"token": token, "csrf": csrf}, {"Origin": "http://evil.example"}),
    ]
    for data, extra_headers in attempts:
        refused = await victim.post("/sign-in/link", data=data, headers=extra_headers)
        assert_page_problem(refused, 403, "csrf")
        assert not await signed_in(victim)
    # A browser with no sign-in cookie at all: whatever csrf value the attacker's form sends.
    victim.cookies.clear()
    refused = await victim.post("/sign-in/link", data={"token": token, "csrf": csrf})
    assert_page_problem(refused, 403, "csrf")
    assert not await signed_in(victim)
    assert await link_used_at(committed_conn, tenant_id) == [None]

    # The link still works for its owner, who presses the button on its page.
    assert (await follow_link(victim, url)).status_code == 303
    assert await signed_in(victim)


async def test_an_expired_link_is_refused_on_its_page_and_when_posted(
    http: httpx.AsyncClient,
    driver: tuple[str, dict[str, str]],
    browsers: Browsers,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    tenant_id, headers = driver
    browser = browsers[0]
    url = await sign_in_link(http, headers)
    page = await browser.get(url.removeprefix(str(browser.base_url)))
    form = {"csrf": hidden(page.text, "csrf"), "token": hidden(page.text, "token")}
    await committed_conn.execute(
        """UPDATE web_sign_in_links SET created_at = now() - interval '16 minutes',
                  expires_at = now() - interval '1 minute' WHERE tenant_id = %s""",
        (tenant_id,),
    )

    shown = await browser.get(url.removeprefix(str(browser.base_url)))
    assert_page_problem(shown, 410, "sign-in-link-expired")
    assert "has expired" in shown.text
    assert 'action="/sign-in/link"' not in shown.text
    posted = await browser.post("/sign-in/link", data=form)
    assert_page_problem(posted, 410, "sign-in-link-expired")
    assert not await signed_in(browser)
    assert await link_used_at(committed_conn, tenant_id) == [None]
    unknown = await browser.get("/sign-in/link?token=" + secrets.token_urlsafe(32))
    assert_page_problem(unknown, 401, "sign-in-refused")


async def test_a_key_revoked_elsewhere_ends_sessions_at_once_and_api_calls_within_5_s(
    http: httpx.AsyncClient,
    driver: tuple[str, dict[str, str]],
    browsers: Browsers,
    committed_conn: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another API process revokes the key (here: the database, which that process writes).
    This process still remembers the key as verified for KEY_CACHE_SECONDS (5 s) for bearer
    calls; sessions, sign-in and sign-in links check the database and have no window."""
    assert tenants.KEY_CACHE_SECONDS == 5.0
    tenant_id, headers = driver
    other_key = await second_key(http, headers)
    session, by_form, unused = browsers[:3]
    await sign_in_with_a_link(session, http, headers)
    unused_link = await sign_in_link(http, headers)
    remembered_at = time.monotonic()
    monkeypatch.setattr(tenants.VERIFIED_KEYS, "clock", lambda: remembered_at)
    tenants.VERIFIED_KEYS.forget(tenant_id=uuid.UUID(tenant_id))
    assert (await http.get("/v1/me", headers=headers)).status_code == 200  # now remembered

    await committed_conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s", (key_id(api_key(headers)),)
    )
    monkeypatch.setattr(tenants.VERIFIED_KEYS, "clock", lambda: remembered_at + 4.9)

    # Inside the window: a bearer call may still pass (the documented bound) ...
    assert (await http.get("/v1/me", headers=headers)).status_code == 200
    # ... but nothing the key opened for a browser does.
    assert not await signed_in(session)
    form = await by_form.get("/sign-in")
    refused = await by_form.post(
        "/sign-in", data={"csrf": hidden(form.text, "csrf"), "api_key": api_key(headers)}
    )
    assert_page_problem(refused, 401, "sign-in-refused")
    assert not await signed_in(by_form)
    assert_problem(await http.post("/v1/me/sign-in-links", headers=headers), 401,
                   "invalid-api-key")  # fmt: skip
    assert_page_problem(await unused.get(unused_link.removeprefix(str(unused.base_url))), 410,
                        "sign-in-link-expired")  # fmt: skip

    # At the bound, the bearer call is refused too.
    monkeypatch.setattr(
        tenants.VERIFIED_KEYS, "clock", lambda: remembered_at + tenants.KEY_CACHE_SECONDS
    )
    assert_problem(await http.get("/v1/me", headers=headers), 401, "invalid-api-key")
    assert await balance_of(http, other_key) == 10 * MB
