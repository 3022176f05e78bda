"""One secret per outside party: a callback signed by one party cannot settle another party's
order, a replayed callback changes nothing, and a rotated-out secret works only while the
overlap lasts. Played over HTTP against the API and the simulated gateways."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from flowbill.settings import CallbackParty, Settings
from tests.conftest import CALLBACK_SECRETS, assert_problem, bearer
from tests.wallet.factories import MB, balance_of, behave, funded_driver, idem, settled
from wallet.gateways import SIGNATURE_HEADER, sign_callback

FINAL = {"fulfilled", "refunded", "failed"}
# The rotated-out payment secret, as an operator would keep it for the overlap.
OLD_PAYMENT_SECRET = "the-payment-partys-previous-secret-of-32-bytes"


@pytest.fixture(autouse=True)
async def payments_held_pending(gateway_url: str) -> None:
    # The payment provider accepts and settles much later: only our forged or replayed
    # callbacks can move the order within the test.
    await behave(gateway_url, pending_rate=1.0, settle_delay_seconds=600)


@pytest.fixture
def rotation(api_settings: Settings) -> Iterator[Settings]:
    """The payment party's previous secret set for the overlap in the API's settings (it
    reads them at each request); unset again afterwards."""
    api_settings.payment_callback_secret_previous = SecretStr(OLD_PAYMENT_SECRET)
    try:
        yield api_settings
    finally:
        api_settings.payment_callback_secret_previous = None


async def pending_payment_order(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> tuple[dict[str, str], str]:
    """A driver's exchange order whose payment the provider has not answered yet."""
    item = await http.post(
        "/v1/operator/wallet/catalogue",
        json={"kind": "membership", "name": "Video membership", "sku": "video-1m",
              "price_bytes": 30 * MB, "price_minor": 500},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert item.status_code == 201, item.text
    _, wallet = await funded_driver(http, settings, mb=100)
    placed = await http.post(
        "/v1/wallet/exchange-orders",
        json={"item_id": item.json()["item_id"]},
        headers=idem(wallet),
    )
    assert placed.status_code == 202, placed.text
    path = f"/v1/wallet/exchange-orders/{placed.json()['order_id']}"
    order = await order_of(http, wallet, path)
    assert (order["state"], order["payment_state"]) == ("placed", "pending"), order
    return wallet, path


async def order_of(http: httpx.AsyncClient, wallet: dict[str, str], path: str) -> dict[str, object]:
    answer = await http.get(path, headers=wallet)
    assert answer.status_code == 200, answer.text
    order: dict[str, object] = answer.json()
    return order


def payment_confirmed(path: str) -> bytes:
    order_id = path.rsplit("/", 1)[1]
    return json.dumps(
        {"kind": "payment", "request_id": order_id, "status": "confirmed",
         "payment_ref": "PAY-FORGED", "amount_minor": 500, "currency": "CNY"}
    ).encode()  # fmt: skip


async def post_callback(http: httpx.AsyncClient, body: bytes, *, secret: str) -> httpx.Response:
    signature = sign_callback(secret, body, now=time.time())
    return await http.post(
        "/v1/gateway-callbacks",
        content=body,
        headers={"content-type": "application/json", SIGNATURE_HEADER: signature},
    )


@pytest.mark.parametrize("signer", ["identity", "carrier", "fulfilment", "invoicing"])
async def test_a_payment_callback_signed_by_another_party_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, signer: CallbackParty
) -> None:
    wallet, path = await pending_payment_order(http, settings, operator_key)
    before = await order_of(http, wallet, path)

    answer = await post_callback(http, payment_confirmed(path), secret=CALLBACK_SECRETS[signer])

    assert_problem(answer, 401, "invalid-signature")
    assert await order_of(http, wallet, path) == before
    assert await balance_of(http, wallet) == 70 * MB


async def test_an_unknown_kind_cannot_pick_a_secret(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    wallet, path = await pending_payment_order(http, settings, operator_key)
    before = await order_of(http, wallet, path)
    body = payment_confirmed(path).replace(b'"payment"', b'"identity_check"', 1)

    answer = await post_callback(http, body, secret=CALLBACK_SECRETS["identity"])

    assert_problem(answer, 401, "invalid-signature")
    assert await order_of(http, wallet, path) == before


async def test_a_replayed_callback_changes_nothing(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    wallet, path = await pending_payment_order(http, settings, operator_key)
    body = payment_confirmed(path)
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign_callback(CALLBACK_SECRETS["payment"], body, now=time.time()),
    }
    first = await http.post("/v1/gateway-callbacks", content=body, headers=headers)
    assert first.status_code == 204, first.text
    # Delivery is held pending too, so the order stays paid once delivery was asked for.
    done = await settled(http, wallet, path, final={"paid", *FINAL})
    for _ in range(100):
        if done["fulfilment_state"] != "waiting":
            break
        await asyncio.sleep(0.05)
        done = await order_of(http, wallet, path)
    assert (done["state"], done["payment_state"]) == ("paid", "captured"), done

    replayed = await http.post("/v1/gateway-callbacks", content=body, headers=headers)
    # Even one that reports the opposite, freshly signed by the right party.
    reversed_body = body.replace(b'"confirmed"', b'"failed"')
    reversed_answer = await post_callback(http, reversed_body, secret=CALLBACK_SECRETS["payment"])

    assert replayed.status_code == 204, replayed.text
    assert reversed_answer.status_code == 204, reversed_answer.text
    assert await order_of(http, wallet, path) == done
    assert await balance_of(http, wallet) == 70 * MB


async def test_the_previous_secret_works_only_during_the_overlap(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, rotation: Settings
) -> None:
    wallet, during = await pending_payment_order(http, settings, operator_key)
    later_wallet, after = await pending_payment_order(http, settings, operator_key)

    accepted = await post_callback(http, payment_confirmed(during), secret=OLD_PAYMENT_SECRET)
    assert accepted.status_code == 204, accepted.text
    assert (await order_of(http, wallet, during))["payment_state"] == "captured"

    rotation.payment_callback_secret_previous = None
    before = await order_of(http, later_wallet, after)
    refused = await post_callback(http, payment_confirmed(after), secret=OLD_PAYMENT_SECRET)

    assert_problem(refused, 401, "invalid-signature")
    assert await order_of(http, later_wallet, after) == before
    # The current secret still settles it.
    current = await post_callback(
        http, payment_confirmed(after), secret=CALLBACK_SECRETS["payment"]
    )
    assert current.status_code == 204, current.text


def test_production_refuses_shared_short_or_placeholder_secrets() -> None:
    real: dict[str, object] = {
        "environment": "production",
        "database_url": "postgresql://flowbill@127.0.0.1/flowbill",
        "mqtt_password": "a-real-mqtt-password",
        "iot_id_hash_key": "k" * 40,
        **{f"{party}_callback_secret": secret for party, secret in CALLBACK_SECRETS.items()},
    }
    Settings(**real)  # type: ignore[arg-type]
    for name, value, message in [
        ("carrier_callback_secret", "too-short", "FLOWBILL_CARRIER_CALLBACK_SECRET"),
        ("identity_callback_secret", "change-me", "FLOWBILL_IDENTITY_CALLBACK_SECRET"),
        ("invoicing_callback_secret", None, "FLOWBILL_INVOICING_CALLBACK_SECRET"),
        ("payment_callback_secret_previous", "short", "FLOWBILL_PAYMENT_CALLBACK_SECRET_PREVIOUS"),
        ("fulfilment_callback_secret", CALLBACK_SECRETS["payment"], "its own"),
        ("payment_callback_secret_previous", CALLBACK_SECRETS["payment"], "repeats"),
    ]:
        values = {key: v for key, v in real.items() if key != name}
        if value is not None:
            values[name] = value
        with pytest.raises(ValueError, match=message):
            Settings(**values)  # type: ignore[arg-type]
