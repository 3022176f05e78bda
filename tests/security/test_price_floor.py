"""Sponsor prices have a floor: a sponsor cannot price its own traffic at nothing. The operator's
rate card holds the least price per MB per app category and currency (a sponsor's own floor
overrides it); a policy or a terms change below it answers 422 `price-below-floor`, names the
floor and changes nothing. Only the operator sets floors.

Floors are shared by every test of the session, so these tests leave the CNY category floors
(0.001 CNY per MB, seeded by the migration) as they are: they raise floors only for sponsors
of their own or in currencies of their own."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime, timedelta

import httpx

from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant

SEEDED = "0.001000"
_used_currencies: set[str] = set()


def new_currency() -> str:
    """A currency code no other test here uses (X.. codes are ISO's private range)."""
    while True:
        code = "X" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(2))
        if code not in _used_currencies:
            _used_currencies.add(code)
            return code


async def a_sponsor(settings: Settings) -> tuple[str, dict[str, str]]:
    sponsor_id, key = await make_tenant(settings, role=Role.SPONSOR)
    return sponsor_id, bearer(key)


def policy(sponsor_id: str, price: str, **extra: object) -> dict[str, object]:
    """A policy on the sponsor's own vehicles (an automaker needs no one's permission)."""
    return {
        "name": f"policy {secrets.token_hex(3)}",
        "scope": {"kind": "automaker", "automaker_id": sponsor_id},
        "categories": ["ota"],
        "unit_price": price,
        **extra,
    }


async def create(
    http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object], key: str = ""
) -> httpx.Response:
    return await http.post(
        "/v1/sponsor/policies",
        json=body,
        headers={**headers, "Idempotency-Key": key or secrets.token_hex(8)},
    )


async def policies_of(http: httpx.AsyncClient, headers: dict[str, str]) -> list[object]:
    answer = await http.get("/v1/sponsor/policies", headers=headers)
    assert answer.status_code == 200, answer.text
    items: list[object] = answer.json()["items"]
    return items


async def set_floor(
    http: httpx.AsyncClient, operator_key: str, path: str, price: str, **extra: object
) -> dict[str, object]:
    answer = await http.put(
        f"/v1/operator/price-floors/{path}",
        json={"min_unit_price": price, **extra},
        headers=bearer(operator_key),
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


async def floors(http: httpx.AsyncClient, operator_key: str, **params: str) -> list[object]:
    answer = await http.get(
        "/v1/operator/price-floors", params={**params, "limit": 1000}, headers=bearer(operator_key)
    )
    assert answer.status_code == 200, answer.text
    items: list[object] = answer.json()["items"]
    return items


async def test_a_policy_at_zero_or_just_below_the_floor_is_refused_and_nothing_is_created(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    sponsor_id, sponsor = await a_sponsor(settings)
    key = secrets.token_hex(8)
    for price in ("0", "0.000999"):
        refused = await create(http, sponsor, policy(sponsor_id, price), key)
        body = assert_problem(refused, 422, "price-below-floor")
        assert body["floor"] == {
            "category": "ota",
            "currency": "CNY",
            "min_unit_price": SEEDED,
            "sponsor_id": None,
            "effective_from": "2000-01-01T00:00:00+00:00",
        }
        assert "0.001" in str(body["detail"])
    assert await policies_of(http, sponsor) == []
    # Nothing was kept under the key either: it creates the policy once the price is right.
    at_floor = await create(http, sponsor, policy(sponsor_id, "0.001"), key)
    assert at_floor.status_code == 201, at_floor.text
    assert at_floor.json()["terms"]["unit_price"] == SEEDED
    above = await create(http, sponsor, policy(sponsor_id, "0.05", categories=["music", "fm"]))
    assert above.status_code == 201, above.text
    assert len(await policies_of(http, sponsor)) == 2


async def test_the_floor_of_an_app_s_category_binds_and_the_highest_missed_floor_is_named(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    sponsor_id, sponsor = await a_sponsor(settings)
    currency = new_currency()
    app = f"floor.{secrets.token_hex(4)}"
    put = await http.put(
        f"/v1/operator/catalogue/apps/{app}", json={"category": "fm"}, headers=bearer(operator_key)
    )
    assert put.status_code == 200, put.text
    await set_floor(http, operator_key, f"{currency}/fm", "0.05")
    await set_floor(http, operator_key, f"{currency}/video", "0.02")

    # The app is paid for at its category's floor, though the policy names no category.
    by_app = policy(sponsor_id, "0.03", categories=[], apps=[app], currency=currency)
    body = assert_problem(await create(http, sponsor, by_app), 422, "price-below-floor")
    assert body["floor"]["category"] == "fm"
    both = policy(sponsor_id, "0.01", categories=["video"], apps=[app], currency=currency)
    body = assert_problem(await create(http, sponsor, both), 422, "price-below-floor")
    assert (body["floor"]["category"], body["floor"]["min_unit_price"]) == ("fm", "0.050000")
    # A category the currency has no floor for takes no policy: no escape by currency.
    unpriced = policy(sponsor_id, "5", categories=["music"], currency=currency)
    body = assert_problem(await create(http, sponsor, unpriced), 422, "no-price-floor")
    assert body["categories"] == ["music"]
    assert await policies_of(http, sponsor) == []
    made = await create(http, sponsor, {**both, "unit_price": "0.05"})
    assert made.status_code == 201, made.text


async def test_a_terms_change_below_the_floor_is_refused_and_the_terms_stay(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    sponsor_id, sponsor = await a_sponsor(settings)
    made = await create(http, sponsor, policy(sponsor_id, "0.02"))
    assert made.status_code == 201, made.text
    path = f"/v1/sponsor/policies/{made.json()['policy_id']}"
    before = (await http.get(path, headers=sponsor)).json()
    change = {"scope": made.json()["terms"]["scope"], "categories": ["ota"]}

    for price in ("0", "0.0009"):
        refused = await http.post(
            f"{path}/terms", json={**change, "unit_price": price}, headers=sponsor
        )
        assert_problem(refused, 422, "price-below-floor")
    # A floor set for later binds terms that start later, not those that start now.
    later = datetime.now(UTC) + timedelta(hours=1)
    await set_floor(
        http, operator_key, f"CNY/ota/sponsors/{sponsor_id}", "0.04",
        effective_from=later.isoformat(),
    )  # fmt: skip
    too_cheap_later = await http.post(
        f"{path}/terms",
        json={**change, "unit_price": "0.03", "effective_from": (later + timedelta(hours=1))
              .isoformat()},
        headers=sponsor,
    )  # fmt: skip
    body = assert_problem(too_cheap_later, 422, "price-below-floor")
    floor = dict(body["floor"])
    assert datetime.fromisoformat(floor.pop("effective_from")) == later
    assert floor == {
        "category": "ota", "currency": "CNY", "min_unit_price": "0.040000",
        "sponsor_id": sponsor_id,
    }  # fmt: skip
    assert (await http.get(path, headers=sponsor)).json() == before

    changed = await http.post(
        f"{path}/terms", json={**change, "unit_price": "0.03"}, headers=sponsor
    )
    assert changed.status_code == 200, changed.text
    assert [t["unit_price"] for t in changed.json()["history"]] == ["0.020000", "0.030000"]


async def test_a_sponsor_s_own_floor_overrides_the_category_s_until_it_ends(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    dear_id, dear = await a_sponsor(settings)
    other_id, other = await a_sponsor(settings)
    own = await set_floor(http, operator_key, f"CNY/music/sponsors/{dear_id}", "0.05")
    assert (own["sponsor_id"], own["min_unit_price"], own["category"]) == (
        dear_id, "0.050000", "music",
    )  # fmt: skip
    music = {"categories": ["music"]}
    body = assert_problem(
        await create(http, dear, policy(dear_id, "0.04", **music)), 422, "price-below-floor"
    )
    assert body["floor"]["sponsor_id"] == dear_id
    # Another sponsor is held to the category's floor only.
    assert (await create(http, other, policy(other_id, "0.04", **music))).status_code == 201
    # A contract price may also lie below the category's floor.
    await set_floor(http, operator_key, f"CNY/telematics/sponsors/{dear_id}", "0")
    cheap = await create(http, dear, policy(dear_id, "0", categories=["telematics"]))
    assert cheap.status_code == 201, cheap.text

    ended = await http.delete(
        f"/v1/operator/price-floors/CNY/music/sponsors/{dear_id}", headers=bearer(operator_key)
    )
    assert ended.status_code == 200, ended.text
    assert ended.json()["min_unit_price"] is None
    assert (await create(http, dear, policy(dear_id, "0.04", **music))).status_code == 201
    again = await http.delete(
        f"/v1/operator/price-floors/CNY/music/sponsors/{dear_id}", headers=bearer(operator_key)
    )
    assert_problem(again, 404, "price-floor-not-found")
    history = await floors(http, operator_key, sponsor_id=dear_id, category="music")
    assert [f["min_unit_price"] for f in history] == ["0.050000", None]


async def test_only_the_operator_sets_or_reads_floors(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    sponsor_id, sponsor = await a_sponsor(settings)
    _, merchant_key = await make_tenant(settings, role=Role.MERCHANT)
    _, driver_key = await make_tenant(settings, role=Role.DRIVER)
    card = await floors(http, operator_key)
    for headers in (sponsor, bearer(merchant_key), bearer(driver_key)):
        for method, path, body in [
            ("PUT", "/v1/operator/price-floors/CNY/ota", {"min_unit_price": "0"}),
            ("PUT", f"/v1/operator/price-floors/CNY/ota/sponsors/{sponsor_id}",
             {"min_unit_price": "0"}),
            ("DELETE", f"/v1/operator/price-floors/CNY/ota/sponsors/{sponsor_id}", None),
            ("GET", "/v1/operator/price-floors", None),
        ]:  # fmt: skip
            answer = await http.request(method, path, json=body, headers=headers)
            assert_problem(answer, 403, "role-not-allowed")
    unauthenticated = await http.put(
        "/v1/operator/price-floors/CNY/ota", json={"min_unit_price": "0"}
    )
    assert unauthenticated.status_code == 401
    assert await floors(http, operator_key) == card
    # And the seeded floor still holds.
    refused = await create(http, sponsor, policy(sponsor_id, "0"))
    assert_problem(refused, 422, "price-below-floor")


async def test_setting_floors_checks_its_input_and_repeats_change_nothing(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    currency = new_currency()
    driver_id, _ = await make_tenant(settings, role=Role.DRIVER)
    nobody = "00000000-0000-4000-8000-" + secrets.token_hex(6)
    operator = bearer(operator_key)
    first = await set_floor(http, operator_key, f"{currency}/ota", "0.01")
    assert (first["currency"], first["category"], first["sponsor_id"]) == (currency, "ota", None)
    assert (await set_floor(http, operator_key, f"{currency}/ota", "0.01")) == first
    raised = await set_floor(http, operator_key, f"{currency}/ota", "0.02")
    assert raised["floor_id"] != first["floor_id"]
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for path, body, status, problem in [
        (f"{currency}/teleportation", {"min_unit_price": "1"}, 422, "invalid-input"),
        (f"{currency.lower()}/ota", {"min_unit_price": "1"}, 422, "invalid-input"),
        (f"{currency}/ota", {"min_unit_price": "-0.01"}, 422, "invalid-input"),
        (f"{currency}/ota", {"min_unit_price": "0.0000001"}, 422, "invalid-input"),
        (f"{currency}/ota", {}, 422, "invalid-input"),
        (f"{currency}/ota", {"min_unit_price": "1", "effective_from": past}, 422,
         "invalid-input"),
        (f"{currency}/ota/sponsors/{driver_id}", {"min_unit_price": "1"}, 422, "not-a-sponsor"),
        (f"{currency}/ota/sponsors/{nobody}", {"min_unit_price": "1"}, 422, "not-a-sponsor"),
    ]:  # fmt: skip
        answer = await http.put(f"/v1/operator/price-floors/{path}", json=body, headers=operator)
        assert_problem(answer, status, problem)
    assert [f["floor_id"] for f in await floors(http, operator_key, currency=currency)] == [
        first["floor_id"], raised["floor_id"],
    ]  # fmt: skip


async def test_a_repeated_create_answers_its_policy_even_after_the_floor_rose(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    sponsor_id, sponsor = await a_sponsor(settings)
    body, key = policy(sponsor_id, "0.02"), secrets.token_hex(8)
    first = await create(http, sponsor, body, key)
    assert first.status_code == 201, first.text
    await set_floor(http, operator_key, f"CNY/ota/sponsors/{sponsor_id}", "0.05")
    again = await create(http, sponsor, body, key)
    assert again.status_code == 200, again.text
    assert again.json()["policy_id"] == first.json()["policy_id"]
    another = await create(http, sponsor, body)
    assert_problem(another, 422, "price-below-floor")
    assert len(await policies_of(http, sponsor)) == 1


async def rate_card(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    answer = await http.get("/v1/sponsor/price-floors", headers=headers)
    assert answer.status_code == 200, answer.text
    return {(f["currency"], f["category"]): f for f in answer.json()["floors"]}


async def test_a_sponsor_reads_the_floors_that_hold_it_and_never_anothers_contract(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    dear_id, dear = await a_sponsor(settings)
    other_id, other = await a_sponsor(settings)
    currency = new_currency()
    await set_floor(http, operator_key, f"{currency}/music", "0.02")
    await set_floor(http, operator_key, f"{currency}/music/sponsors/{dear_id}", "0.07")
    mine, theirs = await rate_card(http, dear), await rate_card(http, other)
    music = (currency, "music")
    assert (mine[music]["min_unit_price"], mine[music]["sponsor_id"]) == ("0.070000", dear_id)
    assert (theirs[music]["min_unit_price"], theirs[music]["sponsor_id"]) == ("0.020000", None)
    assert mine[("CNY", "ota")]["min_unit_price"] == SEEDED
    assert dear_id not in str(theirs)
    assert other_id not in str(mine)
    # What the card says is what a policy is held to.
    refused = await create(
        http, dear, policy(dear_id, "0.06", categories=["music"], currency=currency)
    )
    assert_problem(refused, 422, "price-below-floor")
    made = await create(
        http, other, policy(other_id, "0.06", categories=["music"], currency=currency)
    )
    assert made.status_code == 201, made.text
