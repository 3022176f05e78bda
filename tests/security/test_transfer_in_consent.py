"""Transfer-in needs the subscriber's consent: nothing is taken from a phone line until the user
types the one-time code the carrier texted to it, and never more is credited than was asked.
Played over HTTP against the API and the simulated carrier, which shows the code only on the
phone's side."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flowbill import db
from flowbill.settings import Settings
from tests.conftest import CALLBACK_SECRETS, assert_problem, bearer
from tests.wallet.factories import (
    MB,
    awaiting_transfer_in,
    balance_of,
    behave,
    confirm_transfer_in,
    funded_driver,
    settled,
    simulator_ledger,
)
from wallet.gateways import SIGNATURE_HEADER, sign_callback

FINAL = {"confirmed", "failed"}


@pytest.fixture(autouse=True)
async def good_day(gateway_url: str) -> None:
    await behave(gateway_url)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def order_of(
    http: httpx.AsyncClient, wallet: dict[str, str], order_id: str
) -> dict[str, object]:
    answer = await http.get(f"/v1/wallet/carrier-orders/{order_id}", headers=wallet)
    assert answer.status_code == 200, answer.text
    order: dict[str, object] = answer.json()
    return order


async def transferred(gateway_url: str, order_id: str) -> list[object]:
    """What the carrier moved out of the line for this order."""
    applied = (await simulator_ledger(gateway_url))["applied"]
    assert isinstance(applied, dict)
    return [entry["mb"] for entry in applied["transfer"] if entry["request_id"] == order_id]


async def carrier_callback(http: httpx.AsyncClient, payload: dict[str, object]) -> httpx.Response:
    body = json.dumps(payload).encode()
    signature = sign_callback(CALLBACK_SECRETS["carrier"], body, now=time.time())
    return await http.post(
        "/v1/gateway-callbacks",
        content=body,
        headers={"content-type": "application/json", SIGNATURE_HEADER: signature},
    )


async def reconcile(http: httpx.AsyncClient, operator_key: str) -> None:
    await asyncio.sleep(1.2)  # past the grace period (1 s in tests)
    answer = await http.post("/v1/operator/wallet/reconciliations", headers=bearer(operator_key))
    assert answer.status_code == 200, answer.text


async def test_a_transfer_in_without_confirmation_credits_nothing(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    wallet, order_id, _ = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=80
    )
    await reconcile(http, operator_key)
    # Even the carrier's own signed word cannot settle an order nobody consented to.
    forged = await carrier_callback(
        http, {"kind": "transfer", "request_id": order_id, "status": "confirmed", "mb": 80,
               "validity_days": 30, "carrier_ref": "CM-FORGED"},
    )  # fmt: skip

    assert forged.status_code == 204, forged.text
    order = await order_of(http, wallet, order_id)
    assert (order["state"], order["credited_mb"], order["lot_id"]) == (
        "awaiting_consent", None, None,
    )  # fmt: skip
    assert await balance_of(http, wallet) == 10 * MB
    assert await transferred(gateway_url, order_id) == []


async def test_five_wrong_codes_fail_the_order_and_credit_nothing(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    wallet, order_id, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=80
    )

    tries_left = []
    for _ in range(4):
        answer = await confirm_transfer_in(http, wallet, order_id, wrong(code))
        tries_left.append(assert_problem(answer, 422, "consent-code-wrong")["tries_left"])
    fifth = await confirm_transfer_in(http, wallet, order_id, wrong(code))
    right_but_late = await confirm_transfer_in(http, wallet, order_id, code)

    assert tries_left == [4, 3, 2, 1]
    assert assert_problem(fifth, 409, "consent-failed")["reason"] == "consent_tries_exhausted"
    assert_problem(right_but_late, 409, "consent-failed")
    order = await order_of(http, wallet, order_id)
    assert (order["state"], order["reason"], order["consent_tries"]) == (
        "failed", "consent_tries_exhausted", 5,
    )  # fmt: skip
    assert await balance_of(http, wallet) == 10 * MB
    assert await transferred(gateway_url, order_id) == []


async def test_concurrent_guesses_never_exceed_five_tries(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    wallet, order_id, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=80
    )
    guesses = [f"{n:06d}" for n in range(20) if f"{n:06d}" != code][:12]

    answers = await asyncio.gather(
        *(confirm_transfer_in(http, wallet, order_id, guess) for guess in guesses)
    )

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {409, 422}
    assert statuses.count(422) <= 4
    order = await order_of(http, wallet, order_id)
    assert order["state"] == "failed"
    assert order["consent_tries"] == 5
    assert await balance_of(http, wallet) == 10 * MB
    assert await transferred(gateway_url, order_id) == []


async def test_an_expired_code_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    # Expired at the carrier: its code lives 0.2 s here.
    await behave(gateway_url, consent_code_seconds=0.2)
    wallet, at_carrier, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=80
    )
    await asyncio.sleep(0.3)
    late_at_carrier = await confirm_transfer_in(http, wallet, at_carrier, code)
    # Expired here: five minutes after the order, whatever the carrier would say.
    await behave(gateway_url)
    other_wallet, here, other_code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=80
    )
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE carrier_orders SET consent_expires_at = %s WHERE order_id = %s",
                (datetime.now(UTC) - timedelta(seconds=1), here),
            )
    finally:
        await conn.close()
    late_here = await confirm_transfer_in(http, other_wallet, here, other_code)

    assert_problem(late_at_carrier, 409, "consent-expired")
    assert_problem(late_here, 409, "consent-expired")
    for driver, order_id in ((wallet, at_carrier), (other_wallet, here)):
        order = await order_of(http, driver, order_id)
        assert (order["state"], order["reason"]) == ("failed", "consent_expired")
        assert await transferred(gateway_url, order_id) == []
        assert await balance_of(http, driver) == 10 * MB


async def test_a_confirmed_transfer_credits_no_more_than_was_asked(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    # The carrier moves (and confirms) 50 MB more than asked.
    await behave(gateway_url, transfer_bonus_mb=50)
    wallet, order_id, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=40
    )
    assert (await confirm_transfer_in(http, wallet, order_id, code)).status_code == 202
    done = await settled(http, wallet, f"/v1/wallet/carrier-orders/{order_id}", final=FINAL)
    # A late callback claiming even more changes nothing either.
    late = await carrier_callback(
        http, {"kind": "transfer", "request_id": order_id, "status": "confirmed", "mb": 5000,
               "validity_days": 30, "carrier_ref": "CM-LATE"},
    )  # fmt: skip

    assert await transferred(gateway_url, order_id) == [90]
    assert (done["state"], done["credited_mb"]) == ("confirmed", 40)
    assert late.status_code == 204, late.text
    assert await order_of(http, wallet, order_id) == done
    assert await balance_of(http, wallet) == 50 * MB


async def test_a_late_callback_is_capped_too(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    # The carrier answers "pending" and would settle much later: its callback comes first.
    await behave(gateway_url, pending_rate=1.0, settle_delay_seconds=600)
    wallet, order_id, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=40
    )
    assert (await confirm_transfer_in(http, wallet, order_id, code)).status_code == 202
    await settled(http, wallet, f"/v1/wallet/carrier-orders/{order_id}", final={"submitted"})
    answer = await carrier_callback(
        http, {"kind": "transfer", "request_id": order_id, "status": "confirmed", "mb": 5000,
               "validity_days": 30, "carrier_ref": "CM-LATE"},
    )  # fmt: skip

    assert answer.status_code == 204, answer.text
    order = await order_of(http, wallet, order_id)
    assert (order["state"], order["credited_mb"]) == ("confirmed", 40)
    assert await balance_of(http, wallet) == 50 * MB


async def test_another_driver_cannot_confirm_my_transfer_in(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    wallet, order_id, code = await awaiting_transfer_in(
        http, settings, operator_key, gateway_url, mb=80
    )
    _, other = await funded_driver(http, settings, mb=10)
    before = await order_of(http, wallet, order_id)

    stolen = await confirm_transfer_in(http, other, order_id, code)

    assert_problem(stolen, 404, "order-not-found")
    assert await order_of(http, wallet, order_id) == before
    assert before["consent_tries"] == 0
    assert await balance_of(http, other) == 10 * MB
    assert await balance_of(http, wallet) == 10 * MB
    assert await transferred(gateway_url, order_id) == []
