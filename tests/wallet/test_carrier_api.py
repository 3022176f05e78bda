"""Top-ups and transfers-in through the simulated carrier gateway, over HTTP.

The gateway runs as its own HTTP service (tests/conftest.py `gateway_url`); each test sets how
it behaves and asserts on what it actually applied, so "never loses, never pays twice" is
checked against the carrier's side as well as ours.
"""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest

from flowbill.settings import Settings
from tests.conftest import assert_problem, bearer
from tests.wallet.factories import (
    MB,
    awaiting_transfer_in,
    balance_of,
    behave,
    carrier,
    confirm_transfer_in,
    funded_driver,
    idem,
    placed_transfer_in,
    settled,
    simulator_ledger,
)


def phone() -> str:
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


async def applied(gateway_url: str, kind: str, request_id: str) -> list[dict[str, object]]:
    ledger = await simulator_ledger(gateway_url)
    entries = ledger["applied"]
    assert isinstance(entries, dict)
    return [e for e in entries.get(kind, []) if e["request_id"] == request_id]


async def reconcile(http: httpx.AsyncClient, operator_key: str) -> dict[str, object]:
    # Orders stay open for the grace period (1 s in tests) before reconciliation asks.
    await asyncio.sleep(1.2)
    answer = await http.post("/v1/operator/wallet/reconciliations", headers=bearer(operator_key))
    assert answer.status_code == 200, answer.text
    report: dict[str, object] = answer.json()
    return report


@pytest.fixture(autouse=True)
async def normal_gateway(gateway_url: str) -> None:
    await behave(gateway_url)


async def test_a_top_up_reserves_then_pays_the_carrier_once(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=120)
    headers = idem(wallet, "top-up-1")
    body = {"carrier_id": carrier_id, "phone": phone(), "package_mb": 100}
    placed = await http.post("/v1/wallet/top-ups", json=body, headers=headers)
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert order["phone"].count("*") == 4
    assert body["phone"] not in placed.text
    path = f"/v1/wallet/carrier-orders/{order['order_id']}"
    done = await settled(http, wallet, path, final={"confirmed", "failed"})
    assert done["state"] == "confirmed"
    assert await balance_of(http, wallet) == 20 * MB
    again = await http.post("/v1/wallet/top-ups", json=body, headers=headers)
    assert again.status_code == 202
    assert again.json()["order_id"] == order["order_id"]
    assert again.json()["state"] == "confirmed"
    assert len(await applied(gateway_url, "top_up", order["order_id"])) == 1
    assert await balance_of(http, wallet) == 20 * MB
    history = (await http.get("/v1/wallet/history", headers=wallet)).json()["items"]
    assert (history[0]["kind"], history[0]["data_bytes"]) == ("spend", -100 * MB)
    other = await http.post("/v1/wallet/top-ups", json={**body, "package_mb": 10}, headers=headers)
    assert_problem(other, 409, "idempotency-key-reused")


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        ({"package_mb": 40}, 422, "package-not-offered"),
        ({"package_mb": 0}, 422, "invalid-input"),
        ({"phone": "12345"}, 422, "invalid-input"),
        ({"phone": "+8613912345678"}, 422, "invalid-input"),
        ({"carrier_id": "no-such-carrier"}, 404, "carrier-not-found"),
        ({"carrier_id": "Bad Id"}, 422, "invalid-input"),
        ({"package_mb": 200}, 409, "insufficient-balance"),
    ],
)
async def test_bad_top_ups_are_refused_and_reserve_nothing(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    body: dict[str, object],
    status: int,
    problem: str,
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=150)
    request = {"carrier_id": carrier_id, "phone": phone(), "package_mb": 100, **body}
    answer = await http.post("/v1/wallet/top-ups", json=request, headers=idem(wallet))
    assert_problem(answer, status, problem)
    assert await balance_of(http, wallet) == 150 * MB
    assert (await http.get("/v1/wallet/carrier-orders", headers=wallet)).json()["items"] == []


@pytest.mark.parametrize(
    ("behaviour", "carrier_applies"),
    [
        ({"fail_rate": 1.0}, False),
        ({"timeout_rate": 1.0, "hang_seconds": 1.0}, False),
        ({"lost_response_rate": 1.0, "hang_seconds": 1.0}, True),
    ],
    ids=["fails", "times-out-unapplied", "applies-then-times-out"],
)
async def test_a_carrier_that_fails_or_times_out_loses_nothing_and_never_pays_twice(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    gateway_url: str,
    behaviour: dict[str, object],
    carrier_applies: bool,
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=100)
    await behave(gateway_url, **behaviour)
    placed = await http.post(
        "/v1/wallet/top-ups",
        json={"carrier_id": carrier_id, "phone": phone(), "package_mb": 50},
        headers=idem(wallet),
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    path = f"/v1/wallet/carrier-orders/{order_id}"
    # The outcome is unknown: the reservation holds, nothing is paid out or given back.
    await asyncio.sleep(1.0)
    assert (await http.get(path, headers=wallet)).json()["state"] == "submitted"
    assert await balance_of(http, wallet) == 50 * MB
    # While the gateway still misbehaves (its status queries too), nothing can be settled.
    await reconcile(http, operator_key)
    assert (await http.get(path, headers=wallet)).json()["state"] == "submitted"
    await behave(gateway_url)
    await reconcile(http, operator_key)
    done = await settled(http, wallet, path, final={"confirmed", "failed"})
    assert done["state"] == ("confirmed" if carrier_applies else "failed")
    assert await balance_of(http, wallet) == (50 if carrier_applies else 100) * MB
    assert len(await applied(gateway_url, "top_up", order_id)) == int(carrier_applies)
    # Reconciling again changes nothing.
    await reconcile(http, operator_key)
    assert (await http.get(path, headers=wallet)).json() == done
    assert len(await applied(gateway_url, "top_up", order_id)) == int(carrier_applies)
    books = await http.get("/v1/operator/wallet/ledger-check", headers=bearer(operator_key))
    assert books.json() == {"balanced": True, "problems": []}


async def test_a_late_confirmation_arrives_by_callback(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=100)
    await behave(gateway_url, pending_rate=1.0, settle_delay_seconds=0.5)
    placed = await http.post(
        "/v1/wallet/top-ups",
        json={"carrier_id": carrier_id, "phone": phone(), "package_mb": 30},
        headers=idem(wallet),
    )
    order_id = placed.json()["order_id"]
    done = await settled(
        http, wallet, f"/v1/wallet/carrier-orders/{order_id}", final={"confirmed", "failed"}
    )
    assert done["state"] == "confirmed"
    assert await balance_of(http, wallet) == 70 * MB
    assert len(await applied(gateway_url, "top_up", order_id)) == 1


async def test_a_late_failure_by_callback_releases_the_reservation(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=100)
    await behave(gateway_url, pending_rate=1.0, settle_delay_seconds=0.3, settle_fail_rate=1.0)
    placed = await http.post(
        "/v1/wallet/top-ups",
        json={"carrier_id": carrier_id, "phone": phone(), "package_mb": 30},
        headers=idem(wallet),
    )
    path = f"/v1/wallet/carrier-orders/{placed.json()['order_id']}"
    done = await settled(http, wallet, path, final={"confirmed", "failed"})
    assert done["state"] == "failed"
    assert done["reason"]
    assert await balance_of(http, wallet) == 100 * MB
    lots = (await http.get("/v1/wallet/lots", headers=wallet)).json()["items"]
    assert [lot["remaining_bytes"] for lot in lots] == [100 * MB]


async def test_forged_callbacks_are_refused(http: httpx.AsyncClient) -> None:
    body = (
        b'{"kind": "top_up", "request_id": "00000000-0000-0000-0000-000000000000",'
        b' "status": "confirmed"}'
    )
    answer = await http.post("/v1/gateway-callbacks", content=body)
    assert_problem(answer, 401, "invalid-signature")
    forged = await http.post(
        "/v1/gateway-callbacks",
        content=body,
        headers={"Flowbill-Gateway-Signature": "t=1700000000,v1=" + "0" * 64},
    )
    assert_problem(forged, 401, "invalid-signature")


async def test_a_transfer_in_credits_a_lot_with_the_carriers_validity(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=10)
    number = phone()
    order_id, code = await placed_transfer_in(
        http, gateway_url, wallet, carrier_id=carrier_id, msisdn=number, mb=80
    )
    confirmed = await confirm_transfer_in(http, wallet, order_id, code)
    assert confirmed.status_code == 202, confirmed.text
    assert confirmed.json()["state"] == "reserved"
    path = f"/v1/wallet/carrier-orders/{order_id}"
    done = await settled(http, wallet, path, final={"confirmed", "failed"})
    assert done["state"] == "confirmed", done
    assert (done["credited_mb"], done["consent_tries"]) == (80, 1)
    assert await balance_of(http, wallet) == 90 * MB
    lots = (await http.get("/v1/wallet/lots", headers=wallet)).json()["items"]
    transfer = next(lot for lot in lots if lot["source"] == f"transfer-in:{carrier_id}")
    assert transfer["granted_bytes"] == 80 * MB
    # Confirming again answers the order; nothing moves twice.
    again = await confirm_transfer_in(http, wallet, order_id, code)
    assert again.status_code == 202, again.text
    assert await balance_of(http, wallet) == 90 * MB
    # Beyond what is left of the plan: refused by the carrier, nothing credited.
    too_much, code = await placed_transfer_in(
        http, gateway_url, wallet, carrier_id=carrier_id, msisdn=number, mb=5000
    )
    assert (await confirm_transfer_in(http, wallet, too_much, code)).status_code == 202
    failed = await settled(
        http, wallet, f"/v1/wallet/carrier-orders/{too_much}", final={"confirmed", "failed"}
    )
    assert (failed["state"], failed["reason"]) == ("failed", "insufficient_plan_data")
    assert await balance_of(http, wallet) == 90 * MB
    ledger = await simulator_ledger(gateway_url)
    assert isinstance(ledger["applied"], dict)
    assert [e["mb"] for e in ledger["applied"]["transfer"] if e["request_id"] == order_id] == [80]


async def test_a_wrong_code_counts_a_try_and_the_right_one_still_works(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    wallet, order_id, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=20
    )
    wrong = "000000" if code != "000000" else "111111"
    answer = assert_problem(
        await confirm_transfer_in(http, wallet, order_id, wrong), 422, "consent-code-wrong"
    )
    assert answer["tries_left"] == 4
    assert (await confirm_transfer_in(http, wallet, order_id, code)).status_code == 202
    done = await settled(
        http, wallet, f"/v1/wallet/carrier-orders/{order_id}", final={"confirmed", "failed"}
    )
    assert (done["state"], done["consent_tries"], done["credited_mb"]) == ("confirmed", 2, 20)


async def test_a_transfer_in_waits_for_consent(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    wallet, order_id, _ = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=30
    )
    await asyncio.sleep(0.3)
    order = (await http.get(f"/v1/wallet/carrier-orders/{order_id}", headers=wallet)).json()
    assert order["state"] == "awaiting_consent"
    assert order["phone"].count("*") == 4
    assert await balance_of(http, wallet) == 10 * MB
    assert await applied(gateway_url, "transfer", order_id) == []


async def test_a_carrier_without_transfer_in_refuses_it(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    carrier_id = await carrier(http, operator_key, transfer_in=False)
    _, wallet = await funded_driver(http, settings, mb=10)
    answer = await http.post(
        "/v1/wallet/transfers-in",
        json={"carrier_id": carrier_id, "phone": phone(), "mb": 80},
        headers=idem(wallet),
    )
    assert_problem(answer, 409, "transfer-in-unavailable")


async def test_another_users_order_is_not_found(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=50)
    _, other = await funded_driver(http, settings, mb=10)
    placed = await http.post(
        "/v1/wallet/top-ups",
        json={"carrier_id": carrier_id, "phone": phone(), "package_mb": 10},
        headers=idem(wallet),
    )
    peek = await http.get(f"/v1/wallet/carrier-orders/{placed.json()['order_id']}", headers=other)
    assert_problem(peek, 404, "order-not-found")
    assert_problem(await http.get("/v1/wallet/carrier-orders/not-a-uuid", headers=other), 422,
                   "invalid-input")  # fmt: skip
