"""The gateway simulator and the HTTP adapter, over real HTTP: what each answer means, and that
no timeout makes a party apply a request twice."""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from flowbill.settings import CallbackParty
from simulator.gateways.app import create_gateway_app
from simulator.gateways.behaviour import GatewayBehaviour
from simulator.gateways.carriers import mask_msisdn
from simulator.gateways.parties import plan_mb, validity_days
from tests.conftest import free_port, serving
from wallet.gateways import (
    SIGNATURE_HEADER,
    GatewayResult,
    HttpGateways,
    Outcome,
    interpret,
    sign_callback,
    verify_callback,
)

SECRET = "test-callback-secret"
# Each party signs with its own secret; the carrier's is SECRET.
SECRETS: dict[CallbackParty, str] = {
    "carrier": SECRET,
    "payment": "test-payment-callback-secret",
    "fulfilment": "test-fulfilment-callback-secret",
}
CARRIER = "cmcc-js"
# The simulator hangs longer than the impatient adapter waits.
HANG_SECONDS = 1.0
IMPATIENT_TIMEOUT_SECONDS = 0.3


@dataclass(frozen=True, slots=True)
class Delivery:
    path: str
    body: bytes
    signature: str | None
    accepted: bool

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class CallbackReceiver:
    """Records every callback attempt; under /flaky/ it refuses each path's first attempt."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.app: ASGIApp = Starlette(
            routes=[Route("/{path:path}", self._receive, methods=["POST"])]
        )

    async def _receive(self, request: Request) -> Response:
        path = request.url.path
        first = not any(delivery.path == path for delivery in self.deliveries)
        accepted = not (path.startswith("/flaky/") and first)
        self.deliveries.append(
            Delivery(
                path=path,
                body=await request.body(),
                signature=request.headers.get(SIGNATURE_HEADER),
                accepted=accepted,
            )
        )
        return Response(status_code=204 if accepted else 500)

    async def accepted(self, path: str, *, timeout: float = 5.0) -> Delivery:
        """The accepted callback on this path, once it has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for delivery in self.deliveries:
                if delivery.path == path and delivery.accepted:
                    return delivery
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no callback on {path}")

    def attempts(self, path: str) -> list[Delivery]:
        return [delivery for delivery in self.deliveries if delivery.path == path]


@pytest.fixture(scope="module")
async def simulator_url() -> AsyncIterator[str]:
    async with serving(create_gateway_app(GatewayBehaviour(), callback_secrets=SECRETS)) as url:
        yield url


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[tuple[CallbackReceiver, str]]:
    callbacks = CallbackReceiver()
    async with serving(callbacks.app) as url:
        yield callbacks, url


@pytest.fixture(scope="module")
async def gateways(simulator_url: str) -> AsyncIterator[HttpGateways]:
    async with HttpGateways(simulator_url, timeout_seconds=5.0) as adapter:
        yield adapter


@pytest.fixture(scope="module")
async def impatient(simulator_url: str) -> AsyncIterator[HttpGateways]:
    async with HttpGateways(simulator_url, timeout_seconds=IMPATIENT_TIMEOUT_SECONDS) as adapter:
        yield adapter


@pytest.fixture(scope="module")
async def admin(simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator_url, timeout=5.0) as client:
        yield client


@pytest.fixture(autouse=True)
async def default_behaviour(admin: httpx.AsyncClient) -> AsyncIterator[None]:
    await behave(admin)
    yield
    await behave(admin)


async def behave(admin: httpx.AsyncClient, **behaviour: object) -> None:
    """Replace the simulator's behaviour; fields left out take their defaults."""
    response = await admin.put("/_simulator/behaviour", json=behaviour)
    assert response.status_code == 200, response.text


async def ledger(admin: httpx.AsyncClient) -> dict[str, Any]:
    response = await admin.get("/_simulator/ledger")
    assert response.status_code == 200
    parsed: dict[str, Any] = response.json()
    return parsed


async def applied(admin: httpx.AsyncClient, kind: str, request_id: str) -> list[dict[str, Any]]:
    """The ledger's applications of this request: never more than one."""
    return [
        entry
        for entry in (await ledger(admin))["applied"][kind]
        if entry["request_id"] == request_id
    ]


async def line(admin: httpx.AsyncClient, msisdn: str, carrier: str = CARRIER) -> dict[str, int]:
    lines: dict[str, dict[str, dict[str, int]]] = (await ledger(admin))["lines"]
    return lines[carrier][msisdn]


def new_msisdn() -> str:
    return "139" + "".join(secrets.choice(string.digits) for _ in range(8))


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


async def top_up(
    adapter: HttpGateways,
    *,
    request_id: str,
    msisdn: str,
    package_mb: int = 30,
    callback_url: str | None = None,
) -> GatewayResult:
    return await adapter.submit_top_up(
        carrier=CARRIER,
        request_id=request_id,
        msisdn=msisdn,
        package_mb=package_mb,
        callback_url=callback_url,
    )


# --- carriers: top-ups --------------------------------------------------------------------


async def test_top_up_confirms_at_once(gateways: HttpGateways, admin: httpx.AsyncClient) -> None:
    request_id, msisdn = new_id("top"), new_msisdn()

    result = await top_up(gateways, request_id=request_id, msisdn=msisdn)

    assert result.outcome is Outcome.CONFIRMED
    assert result.reference is not None
    assert result.reason is None
    status = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)
    assert (status.outcome, status.reference) == (Outcome.CONFIRMED, result.reference)
    assert await applied(admin, "top_up", request_id) == [
        {"carrier": CARRIER, "request_id": request_id, "msisdn": msisdn, "mb": 30}
    ]
    assert (await line(admin, msisdn))["topped_up_mb"] == 30


async def test_repeated_top_up_is_applied_once(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    request_id, msisdn = new_id("top"), new_msisdn()

    results = [await top_up(gateways, request_id=request_id, msisdn=msisdn) for _ in range(3)]

    assert {result.outcome for result in results} == {Outcome.CONFIRMED}
    assert len({result.reference for result in results}) == 1
    assert len(await applied(admin, "top_up", request_id)) == 1
    assert (await line(admin, msisdn))["topped_up_mb"] == 30


async def test_request_id_reused_with_another_body_conflicts(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    request_id, msisdn = new_id("top"), new_msisdn()
    assert (await top_up(gateways, request_id=request_id, msisdn=msisdn)).outcome is (
        Outcome.CONFIRMED
    )

    raw = await admin.post(
        f"/carriers/{CARRIER}/top-ups",
        json={"request_id": request_id, "msisdn": msisdn, "package_mb": 50},
    )
    result = await top_up(gateways, request_id=request_id, msisdn=msisdn, package_mb=100)

    assert raw.status_code == 409
    assert (result.outcome, result.reason) == (Outcome.UNKNOWN, "request_id_conflict")
    assert [entry["mb"] for entry in await applied(admin, "top_up", request_id)] == [30]


@pytest.mark.parametrize(
    ("msisdn", "package_mb", "reason"),
    [
        ("12345678901", 30, "invalid_number"),
        ("1391234567", 30, "invalid_number"),
        (None, 25, "package_not_offered"),
    ],
)
async def test_refused_top_up_fails_with_its_reason(
    gateways: HttpGateways,
    admin: httpx.AsyncClient,
    msisdn: str | None,
    package_mb: int,
    reason: str,
) -> None:
    request_id = new_id("top")

    result = await top_up(
        gateways, request_id=request_id, msisdn=msisdn or new_msisdn(), package_mb=package_mb
    )

    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)
    status = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)
    assert (status.outcome, status.reason) == (Outcome.FAILED, reason)
    assert await applied(admin, "top_up", request_id) == []


async def test_unavailable_party_is_unknown_and_applies_nothing(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    request_id, msisdn = new_id("top"), new_msisdn()
    await behave(admin, fail_rate=1.0)

    result = await top_up(gateways, request_id=request_id, msisdn=msisdn)
    during = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)
    await behave(admin)
    after = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)

    assert (result.outcome, result.reason) == (Outcome.UNKNOWN, "http_503")
    assert during.outcome is Outcome.UNKNOWN
    assert (after.outcome, after.reason) == (Outcome.FAILED, "not_received")
    assert await applied(admin, "top_up", request_id) == []


async def test_timeout_is_unknown_and_applies_nothing(
    gateways: HttpGateways, impatient: HttpGateways, admin: httpx.AsyncClient
) -> None:
    request_id, msisdn = new_id("top"), new_msisdn()
    await behave(admin, timeout_rate=1.0, hang_seconds=HANG_SECONDS)

    result = await top_up(impatient, request_id=request_id, msisdn=msisdn)
    await behave(admin)
    status = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)

    assert (result.outcome, result.reason) == (Outcome.UNKNOWN, "timeout")
    assert (status.outcome, status.reason) == (Outcome.FAILED, "not_received")
    # Once the hung request has been answered, it still has done nothing...
    await asyncio.sleep(HANG_SECONDS)
    assert await applied(admin, "top_up", request_id) == []
    # ...so resubmitting it applies it, once.
    assert (await top_up(gateways, request_id=request_id, msisdn=msisdn)).outcome is (
        Outcome.CONFIRMED
    )
    assert len(await applied(admin, "top_up", request_id)) == 1


async def test_lost_response_is_unknown_but_applied_once(
    gateways: HttpGateways, impatient: HttpGateways, admin: httpx.AsyncClient
) -> None:
    request_id, msisdn = new_id("top"), new_msisdn()
    await behave(admin, lost_response_rate=1.0, hang_seconds=HANG_SECONDS)

    first = await top_up(impatient, request_id=request_id, msisdn=msisdn)
    resubmitted = await top_up(impatient, request_id=request_id, msisdn=msisdn)
    await behave(admin)
    status = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)
    again = await top_up(gateways, request_id=request_id, msisdn=msisdn)

    assert first.outcome is Outcome.UNKNOWN
    assert resubmitted.outcome is Outcome.UNKNOWN
    assert status.outcome is Outcome.CONFIRMED
    assert (again.outcome, again.reference) == (Outcome.CONFIRMED, status.reference)
    assert len(await applied(admin, "top_up", request_id)) == 1
    assert (await line(admin, msisdn))["topped_up_mb"] == 30


async def test_pending_top_up_settles_with_a_signed_callback(
    gateways: HttpGateways,
    admin: httpx.AsyncClient,
    receiver: tuple[CallbackReceiver, str],
) -> None:
    callbacks, receiver_url = receiver
    request_id, msisdn = new_id("top"), new_msisdn()
    await behave(admin, pending_rate=1.0, settle_delay_seconds=0.3)

    result = await top_up(
        gateways, request_id=request_id, msisdn=msisdn, callback_url=f"{receiver_url}/top-ups"
    )
    before = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)
    applied_before = await applied(admin, "top_up", request_id)
    delivery = await callbacks.accepted("/top-ups")
    after = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)

    assert result.outcome is Outcome.PENDING
    assert before.outcome is Outcome.PENDING
    assert applied_before == []
    assert verify_callback((SECRET,), delivery.body, delivery.signature, now=time.time())
    assert delivery.payload["kind"] == "top_up"
    assert delivery.payload["request_id"] == request_id
    assert delivery.payload["status"] == "confirmed"
    assert (after.outcome, after.reference) == (Outcome.CONFIRMED, delivery.payload["carrier_ref"])
    assert len(await applied(admin, "top_up", request_id)) == 1


async def test_pending_that_fails_to_settle_applies_nothing(
    gateways: HttpGateways,
    admin: httpx.AsyncClient,
    receiver: tuple[CallbackReceiver, str],
) -> None:
    callbacks, receiver_url = receiver
    request_id = new_id("top")
    path = f"/settle-fails/{request_id}"
    await behave(admin, pending_rate=1.0, settle_fail_rate=1.0)

    result = await top_up(
        gateways, request_id=request_id, msisdn=new_msisdn(), callback_url=receiver_url + path
    )
    delivery = await callbacks.accepted(path)
    status = await gateways.top_up_status(carrier=CARRIER, request_id=request_id)

    assert result.outcome is Outcome.PENDING
    assert (delivery.payload["status"], delivery.payload["reason"]) == (
        "failed",
        "carrier_rejected",
    )
    assert (status.outcome, status.reason) == (Outcome.FAILED, "carrier_rejected")
    assert await applied(admin, "top_up", request_id) == []


async def test_callback_is_retried_until_the_receiver_accepts(
    gateways: HttpGateways,
    admin: httpx.AsyncClient,
    receiver: tuple[CallbackReceiver, str],
) -> None:
    callbacks, receiver_url = receiver
    request_id = new_id("pay")
    path = f"/flaky/{request_id}"
    await behave(admin, pending_rate=1.0)

    result = await gateways.charge(
        request_id=request_id,
        amount_minor=990,
        currency="CNY",
        callback_url=receiver_url + path,
    )
    delivery = await callbacks.accepted(path)

    assert result.outcome is Outcome.PENDING
    assert [attempt.accepted for attempt in callbacks.attempts(path)] == [False, True]
    # The payment provider signs with its own secret, never with the carrier's.
    signature = delivery.signature
    assert verify_callback((SECRETS["payment"],), delivery.body, signature, now=time.time())
    assert not verify_callback((SECRET,), delivery.body, signature, now=time.time())
    assert (delivery.payload["kind"], delivery.payload["status"]) == ("payment", "confirmed")
    assert len(await applied(admin, "payment", request_id)) == 1


# --- carriers: transfers in ---------------------------------------------------------------


async def consented(
    gateways: HttpGateways, admin: httpx.AsyncClient, *, msisdn: str, mb: int
) -> str:
    """A transfer request id whose line's subscriber typed the code texted to the phone."""
    request_id = new_id("xfer")
    sent = await gateways.request_transfer_consent(
        carrier=CARRIER, request_id=request_id, msisdn=msisdn, mb=mb
    )
    assert sent.outcome is Outcome.PENDING, sent
    verified = await gateways.verify_transfer_consent(
        carrier=CARRIER, request_id=request_id, code=(await texted(admin, msisdn))[-1]
    )
    assert verified.outcome is Outcome.CONFIRMED, verified
    return request_id


async def texted(admin: httpx.AsyncClient, msisdn: str) -> list[str]:
    """The codes the phone received, read on the phone's side only."""
    answer = await admin.get(f"/_simulator/phones/{msisdn}/messages")
    assert answer.status_code == 200, answer.text
    return [message["code"] for message in answer.json()["messages"]]


async def test_transfer_moves_plan_data_out(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    msisdn = new_msisdn()
    request_id = await consented(gateways, admin, msisdn=msisdn, mb=40)

    result = await gateways.submit_transfer_in(carrier=CARRIER, request_id=request_id, mb=40)
    repeat = await gateways.submit_transfer_in(carrier=CARRIER, request_id=request_id, mb=40)
    status = await gateways.transfer_status(carrier=CARRIER, request_id=request_id)

    assert result.outcome is Outcome.CONFIRMED
    assert result.detail["mb"] == 40
    assert result.detail["validity_days"] == validity_days(CARRIER)
    assert 30 <= validity_days(CARRIER) <= 365
    assert repeat.reference == result.reference
    assert (status.outcome, status.detail["mb"]) == (Outcome.CONFIRMED, 40)
    assert await line(admin, msisdn) == {
        "plan_mb": plan_mb(CARRIER, msisdn),
        "topped_up_mb": 0,
        "transferred_out_mb": 40,
        "plan_remaining_mb": plan_mb(CARRIER, msisdn) - 40,
    }


async def test_transfer_beyond_the_plan_is_refused(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    msisdn = new_msisdn()
    remaining = plan_mb(CARRIER, msisdn)
    assert 100 <= remaining <= 2048

    async def transfer(mb: int) -> GatewayResult:
        request_id = await consented(gateways, admin, msisdn=msisdn, mb=mb)
        return await gateways.submit_transfer_in(carrier=CARRIER, request_id=request_id, mb=mb)

    too_much = await transfer(remaining + 1)
    everything = await transfer(remaining)
    one_more = await transfer(1)
    bad_number = await gateways.request_transfer_consent(
        carrier=CARRIER, request_id=new_id("xfer"), msisdn="10086", mb=1
    )

    assert (too_much.outcome, too_much.reason) == (Outcome.FAILED, "insufficient_plan_data")
    assert everything.outcome is Outcome.CONFIRMED
    assert (one_more.outcome, one_more.reason) == (Outcome.FAILED, "insufficient_plan_data")
    assert (bad_number.outcome, bad_number.reason) == (Outcome.FAILED, "invalid_number")
    assert (await line(admin, msisdn))["plan_remaining_mb"] == 0


async def test_no_transfer_without_the_lines_consent(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    msisdn = new_msisdn()
    unasked = await gateways.submit_transfer_in(carrier=CARRIER, request_id=new_id("xfer"), mb=10)
    request_id = new_id("xfer")
    await gateways.request_transfer_consent(
        carrier=CARRIER, request_id=request_id, msisdn=msisdn, mb=10
    )
    code = (await texted(admin, msisdn))[-1]
    unconfirmed = await gateways.submit_transfer_in(carrier=CARRIER, request_id=request_id, mb=10)
    wrong = "000000" if code != "000000" else "111111"
    tries = [
        await gateways.verify_transfer_consent(carrier=CARRIER, request_id=request_id, code=wrong)
        for _ in range(5)
    ]
    locked = await gateways.verify_transfer_consent(
        carrier=CARRIER, request_id=request_id, code=code
    )
    unseen = await gateways.verify_transfer_consent(
        carrier=CARRIER, request_id=new_id("xfer"), code=code
    )

    assert (unasked.outcome, unasked.reason) == (Outcome.FAILED, "consent_required")
    assert (unconfirmed.outcome, unconfirmed.reason) == (Outcome.FAILED, "consent_required")
    assert [(t.outcome, t.reason) for t in tries] == [(Outcome.FAILED, "wrong_code")] * 5
    assert (locked.outcome, locked.reason) == (Outcome.FAILED, "too_many_attempts")
    assert (unseen.outcome, unseen.reason) == (Outcome.FAILED, "consent_not_found")
    assert msisdn not in (await ledger(admin))["lines"].get(CARRIER, {})
    # The code is on the phone only: never in the ledger.
    assert all("code" not in entry for entry in (await ledger(admin))["applied"]["consent"])


async def test_a_consent_code_expires(gateways: HttpGateways, admin: httpx.AsyncClient) -> None:
    await behave(admin, consent_code_seconds=0.1)
    msisdn, request_id = new_msisdn(), new_id("xfer")
    await gateways.request_transfer_consent(
        carrier=CARRIER, request_id=request_id, msisdn=msisdn, mb=10
    )
    await asyncio.sleep(0.2)
    late = await gateways.verify_transfer_consent(
        carrier=CARRIER, request_id=request_id, code=(await texted(admin, msisdn))[-1]
    )
    assert (late.outcome, late.reason) == (Outcome.FAILED, "code_expired")


# --- payments -----------------------------------------------------------------------------


async def test_charge_and_refunds_never_exceed_the_capture(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    payment_id = new_id("pay")
    first_refund, second_refund = new_id("rfd"), new_id("rfd")

    charged = await gateways.charge(
        request_id=payment_id, amount_minor=1000, currency="CNY", callback_url=None
    )
    refunded = await gateways.refund(
        payment_id=payment_id, request_id=first_refund, amount_minor=600
    )
    repeated = await gateways.refund(
        payment_id=payment_id, request_id=first_refund, amount_minor=600
    )
    too_much = await gateways.refund(
        payment_id=payment_id, request_id=new_id("rfd"), amount_minor=401
    )
    rest = await gateways.refund(payment_id=payment_id, request_id=second_refund, amount_minor=400)

    assert charged.outcome is Outcome.CONFIRMED
    assert (await gateways.charge_status(request_id=payment_id)).outcome is Outcome.CONFIRMED
    assert refunded.outcome is Outcome.CONFIRMED
    assert repeated.reference == refunded.reference
    assert (too_much.outcome, too_much.reason) == (Outcome.FAILED, "exceeds_captured")
    assert rest.outcome is Outcome.CONFIRMED
    status = await gateways.refund_status(payment_id=payment_id, request_id=first_refund)
    assert (status.outcome, status.reference) == (Outcome.CONFIRMED, refunded.reference)
    book = await ledger(admin)
    assert book["payments"][payment_id] == {"captured_minor": 1000, "refunded_minor": 1000}
    assert [
        entry["amount_minor"]
        for entry in book["applied"]["refund"]
        if entry["payment_id"] == payment_id
    ] == [600, 400]


async def test_declined_charge_fails_and_cannot_be_refunded(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    payment_id = new_id("pay")
    await behave(admin, decline_rate=1.0)

    result = await gateways.charge(
        request_id=payment_id, amount_minor=500, currency="CNY", callback_url=None
    )
    await behave(admin)
    repeat = await gateways.charge(
        request_id=payment_id, amount_minor=500, currency="CNY", callback_url=None
    )
    refund = await gateways.refund(payment_id=payment_id, request_id=new_id("rfd"), amount_minor=1)
    unknown_payment = await gateways.refund(
        payment_id=new_id("pay"), request_id=new_id("rfd"), amount_minor=1
    )
    wrong_currency = await gateways.charge(
        request_id=new_id("pay"), amount_minor=500, currency="USD", callback_url=None
    )

    assert (result.outcome, result.reason) == (Outcome.FAILED, "declined")
    # The decline stands: the provider answers a repeat as it did the first time.
    assert (repeat.outcome, repeat.reason) == (Outcome.FAILED, "declined")
    assert (refund.outcome, refund.reason) == (Outcome.FAILED, "payment_not_captured")
    assert (unknown_payment.outcome, unknown_payment.reason) == (
        Outcome.FAILED,
        "payment_not_found",
    )
    assert (wrong_currency.outcome, wrong_currency.reason) == (
        Outcome.FAILED,
        "unsupported_currency",
    )
    assert await applied(admin, "payment", payment_id) == []


# --- fulfilment ---------------------------------------------------------------------------


async def test_fulfilment_delivers_a_voucher_or_is_out_of_stock(
    gateways: HttpGateways, admin: httpx.AsyncClient
) -> None:
    delivered_id, declined_id = new_id("ful"), new_id("ful")

    async def order(request_id: str) -> GatewayResult:
        return await gateways.fulfil(
            request_id=request_id,
            item_kind="red_envelope",
            sku="RE-8.88",
            quantity=2,
            recipient_ref="user-42",
            callback_url=None,
        )

    delivered = await order(delivered_id)
    await behave(admin, decline_rate=1.0)
    declined = await order(declined_id)
    await behave(admin)
    status = await gateways.fulfilment_status(request_id=delivered_id)

    assert delivered.outcome is Outcome.CONFIRMED
    assert isinstance(delivered.detail["voucher"], str)
    assert (declined.outcome, declined.reason) == (Outcome.FAILED, "out_of_stock")
    assert (status.outcome, status.detail["voucher"]) == (
        Outcome.CONFIRMED,
        delivered.detail["voucher"],
    )
    assert len(await applied(admin, "fulfilment", delivered_id)) == 1
    assert await applied(admin, "fulfilment", declined_id) == []


# --- status queries, transport failures ---------------------------------------------------


async def test_requests_never_received_are_failed_not_received(gateways: HttpGateways) -> None:
    unseen = new_id("unseen")

    results = [
        await gateways.top_up_status(carrier=CARRIER, request_id=unseen),
        await gateways.transfer_status(carrier=CARRIER, request_id=unseen),
        await gateways.charge_status(request_id=unseen),
        await gateways.refund_status(payment_id=unseen, request_id=unseen),
        await gateways.fulfilment_status(request_id=unseen),
    ]

    assert {(result.outcome, result.reason) for result in results} == {
        (Outcome.FAILED, "not_received")
    }


async def test_unreachable_party_is_unknown() -> None:
    async with HttpGateways(f"http://127.0.0.1:{free_port()}", timeout_seconds=1.0) as adapter:
        result = await adapter.charge(
            request_id=new_id("pay"), amount_minor=1, currency="CNY", callback_url=None
        )

    assert (result.outcome, result.reason) == (Outcome.UNKNOWN, "transport_error")


async def test_behaviour_is_readable_and_validated(admin: httpx.AsyncClient) -> None:
    await behave(admin, seed=7, latency_seconds=[0.0, 0.01], pending_rate=0.5)

    current = (await admin.get("/_simulator/behaviour")).json()
    too_high = await admin.put("/_simulator/behaviour", json={"fail_rate": 1.5})
    typo = await admin.put("/_simulator/behaviour", json={"fail_rte": 0.5})
    backwards = await admin.put("/_simulator/behaviour", json={"latency_seconds": [2, 1]})

    assert current["seed"] == 7
    assert current["latency_seconds"] == [0.0, 0.01]
    assert current["pending_rate"] == 0.5
    assert current["fail_rate"] == 0.0
    assert {too_high.status_code, typo.status_code, backwards.status_code} == {422}
    assert (await admin.get("/_simulator/behaviour")).json() == current
    assert (await admin.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("status_code", "content", "status_query", "expected"),
    [
        (200, b'{"status":"confirmed","carrier_ref":"C-1"}', False, (Outcome.CONFIRMED, None)),
        (200, b'{"status":"pending"}', True, (Outcome.PENDING, None)),
        (
            200,
            b'{"status":"failed","reason":"invalid_number"}',
            True,
            (Outcome.FAILED, "invalid_number"),
        ),
        (202, b"", False, (Outcome.PENDING, None)),
        (402, b'{"status":"failed","reason":"declined"}', False, (Outcome.FAILED, "declined")),
        (404, b"<html>", True, (Outcome.FAILED, "not_received")),
        # A submission answered 200 must say it was confirmed; anything else is not clear.
        (200, b'{"status":"pending"}', False, (Outcome.UNKNOWN, "unparseable_response")),
        (200, b"<html>", False, (Outcome.UNKNOWN, "unparseable_response")),
        (200, b"[]", True, (Outcome.UNKNOWN, "unparseable_response")),
        (400, b'{"detail":"bad"}', False, (Outcome.UNKNOWN, "unparseable_response")),
        (302, b"", False, (Outcome.UNKNOWN, "unparseable_response")),
        (502, b'{"status":"failed"}', False, (Outcome.UNKNOWN, "http_502")),
    ],
)
def test_answers_are_interpreted_conservatively(
    status_code: int, content: bytes, status_query: bool, expected: tuple[Outcome, str | None]
) -> None:
    result = interpret(status_code, content, reference_key="carrier_ref", status_query=status_query)

    assert (result.outcome, result.reason) == expected


# --- callback signatures ------------------------------------------------------------------

BODY = b'{"kind":"top_up","request_id":"r-1","status":"confirmed"}'
NOW = 1_750_000_000.0


def test_signed_callback_verifies() -> None:
    header = sign_callback(SECRET, BODY, now=NOW)

    assert header.startswith(f"t={int(NOW)},v1=")
    assert verify_callback((SECRET,), BODY, header, now=NOW + 299)
    assert verify_callback(("the-next-secret", SECRET), BODY, header, now=NOW)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        pytest.param(SECRET, BODY.replace(b"confirmed", b"failed"), NOW, id="tampered body"),
        pytest.param("another-secret", BODY, NOW, id="wrong secret"),
        pytest.param(SECRET, BODY, NOW + 301, id="stale"),
        pytest.param(SECRET, BODY, NOW - 301, id="from the future"),
    ],
)
def test_callback_verification_rejects(secret: str, body: bytes, now: float) -> None:
    assert not verify_callback((secret,), body, sign_callback(SECRET, BODY, now=NOW), now=now)


@pytest.mark.parametrize(
    "header", [None, "", "v1=abc", f"t={int(NOW)}", "t=soon,v1=abc", "garbage"]
)
def test_callback_verification_rejects_malformed_headers(header: str | None) -> None:
    assert not verify_callback((SECRET,), BODY, header, now=NOW)


def test_phone_numbers_are_masked() -> None:
    assert mask_msisdn("13912345678") == "139****5678"
    assert mask_msisdn("10086") == "****"
