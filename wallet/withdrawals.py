"""Data between wallets and carriers: top-ups of a phone number, transfers-in of in-plan data.

A top-up is an order that reserves the data first (wallet → in flight, in the request's
transaction), is then submitted to the carrier's gateway under the order id (the gateway's
idempotency key), and settles once: confirmed (in flight → carrier) or failed (the reservation
goes back to the lots it came from). When the gateway's answer is unknown (a timeout, a 5xx) the
order stays submitted and keeps its reservation until the carrier's callback or the
reconciliation asks the carrier: a timeout never loses data and never pays twice.

A transfer-in takes data from a phone line, so it first needs the line's subscriber's consent:
the order starts `awaiting_consent`, the carrier texts a one-time code to the line, and the user
confirms with that code (at most CONSENT_TRIES tries, within CONSENT_WINDOW); only then is the
transfer submitted. The code is the carrier's: we never see it except when the user types it,
and we never keep it. What a confirmed transfer credits is capped at what was asked.

Submission and reconciliation run outside the request's transaction (the carrier must only
hear of an order that is committed), so they take the pool and own short transactions; so does
the confirmation, whose tries must count even when the code is wrong.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from flowbill import metrics, paging
from flowbill.db import Connection
from flowbill.errors import FlowbillError
from flowbill.paging import Page
from flowbill.units import MB
from wallet import service
from wallet.errors import (
    CarrierNotFound,
    CarrierUnavailable,
    ConsentCodeWrong,
    ConsentExpired,
    ConsentFailed,
    IdempotencyKeyReused,
    OrderNotFound,
    PackageNotOffered,
    TransferInUnavailable,
)
from wallet.gateways import CarrierGateway, GatewayResult, Outcome
from wallet.repository import carriers as repository
from wallet.repository.carriers import CarrierOrderRow, CarrierRow
from wallet.schemas import (
    CarrierConfig,
    CarrierOrderPublic,
    CarrierPublic,
    ReconcileReport,
    TopUpRequest,
    TransferInRequest,
)
from wallet.service import AccountKind

log = logging.getLogger(__name__)

TOP_UP = "top_up"
TRANSFER_IN = "transfer_in"
AWAITING_CONSENT = "awaiting_consent"
SETTLED = frozenset({"confirmed", "failed"})
# As the carriers' one-time codes: five tries, five minutes.
CONSENT_TRIES = 5
CONSENT_WINDOW = timedelta(minutes=5)


def mask_phone(msisdn: str) -> str:
    """138****5678: enough for a person to recognise their number, not to dial it."""
    return f"{msisdn[:3]}****{msisdn[-4:]}"


async def set_carrier(conn: Connection, *, carrier_id: str, config: CarrierConfig) -> CarrierPublic:
    """Add or change a carrier: its packages, the minimum top-up, transfer-in."""
    row = await repository.upsert_carrier(
        conn, carrier_id=carrier_id, name=config.name, package_mb=sorted(config.package_mb),
        min_package_mb=config.min_package_mb, transfer_in=config.transfer_in,
    )  # fmt: skip
    return CarrierPublic.model_validate(row)


async def carriers(conn: Connection, *, limit: int, cursor: str | None) -> Page[CarrierPublic]:
    """Carriers by id, with the packages they sell."""
    after = None if cursor is None else paging.decode_cursor(cursor, (str,), scope="carriers")
    rows = await repository.list_carriers(
        conn, after=None if after is None else after[0], limit=limit + 1
    )
    return paging.page(
        [CarrierPublic.model_validate(row) for row in rows],
        limit=limit, key=lambda carrier: (carrier.carrier_id,), scope="carriers",
    )  # fmt: skip


async def _carrier(conn: Connection, carrier_id: str) -> CarrierRow:
    carrier = await repository.get_carrier(conn, carrier_id)
    if carrier is None:
        raise CarrierNotFound(f"no carrier {carrier_id}")
    return carrier


def _same_request(
    order: CarrierOrderRow, direction: str, carrier_id: str, phone: str, mb: int
) -> None:
    if (order.direction, order.carrier_id, order.msisdn_masked, order.data_mb) != (
        direction, carrier_id, mask_phone(phone), mb,
    ):  # fmt: skip
        raise IdempotencyKeyReused("this Idempotency-Key was used for another order")


async def request_top_up(
    conn: Connection, *, user: str, key: str, body: TopUpRequest, now: datetime
) -> tuple[CarrierOrderPublic, bool]:
    """Reserve the data of a top-up; returns the order and whether it is new (to submit)."""
    carrier = await _carrier(conn, body.carrier_id)
    if body.package_mb not in carrier.package_mb or body.package_mb < carrier.min_package_mb:
        offered = sorted(p for p in carrier.package_mb if p >= carrier.min_package_mb)
        raise PackageNotOffered(
            f"{carrier.name} sells packages of {offered} MB", packages_mb=offered
        )
    order, created = await repository.insert_carrier_order(
        conn, direction=TOP_UP, user_id=user, key=key, carrier_id=carrier.carrier_id,
        msisdn_masked=mask_phone(body.phone), data_mb=body.package_mb, state="reserved",
    )  # fmt: skip
    if not created:
        _same_request(order, TOP_UP, body.carrier_id, body.phone, body.package_mb)
        return CarrierOrderPublic.model_validate(order), False
    spent = await service.spend(
        conn, key=f"carrier-order:{order.order_id}:reserve", user=user,
        data_bytes=body.package_mb * MB, to_kind=AccountKind.IN_FLIGHT,
        to_owner=f"carrier:{carrier.carrier_id}", now=now,
        memo={"top_up": str(order.order_id), "carrier": carrier.carrier_id,
              "package_mb": body.package_mb},
    )  # fmt: skip
    await repository.update_carrier_order(
        conn, order.order_id, state="reserved", reserve_txn_id=spent.txn_id
    )
    fresh = await repository.get_carrier_order(conn, order.order_id)
    assert fresh is not None
    return CarrierOrderPublic.model_validate(fresh), True


async def request_transfer_in(
    conn: Connection, *, user: str, key: str, body: TransferInRequest, now: datetime
) -> tuple[CarrierOrderPublic, bool]:
    """Record a transfer-in waiting for the line's consent; returns the order and whether it
    is new (then the carrier is to text the line its code: `request_consent`)."""
    carrier = await _carrier(conn, body.carrier_id)
    if not carrier.transfer_in:
        raise TransferInUnavailable(f"{carrier.name} does not move in-plan data into wallets")
    order, created = await repository.insert_carrier_order(
        conn, direction=TRANSFER_IN, user_id=user, key=key, carrier_id=carrier.carrier_id,
        msisdn_masked=mask_phone(body.phone), data_mb=body.mb, state=AWAITING_CONSENT,
        consent_expires_at=now + CONSENT_WINDOW,
    )  # fmt: skip
    if not created:
        _same_request(order, TRANSFER_IN, body.carrier_id, body.phone, body.mb)
    return CarrierOrderPublic.model_validate(order), created


async def request_consent(
    pool: AsyncConnectionPool[Connection],
    gateway: CarrierGateway,
    *,
    order_id: UUID,
    msisdn: str,
    now: datetime,
) -> None:
    """Have the carrier text the line of a committed transfer-in its one-time code.

    The number is passed on, never kept. An unclear answer leaves the order waiting: if the
    code reached the line it can still be confirmed, else the order expires.
    """
    async with pool.connection() as conn:
        order = await repository.get_carrier_order(conn, order_id)
    if order is None or order.state != AWAITING_CONSENT:
        return
    result = await gateway.request_transfer_consent(
        carrier=order.carrier_id, request_id=str(order_id), msisdn=msisdn, mb=order.data_mb
    )
    if result.outcome is Outcome.FAILED:
        async with pool.connection() as conn, conn.transaction():
            locked = await repository.get_carrier_order(conn, order_id, lock=True)
            if locked is not None and locked.state == AWAITING_CONSENT:
                await _fail(conn, locked, result.reason or "consent_not_sent", now)


async def confirm_transfer_in(
    pool: AsyncConnectionPool[Connection],
    gateway: CarrierGateway,
    *,
    user: str,
    order_id: UUID,
    code: str,
    now: datetime,
) -> tuple[CarrierOrderPublic, bool]:
    """Confirm a transfer-in with the code the carrier texted to the line; returns the order
    and whether it is to be submitted now.

    Each try is counted (and committed) before the carrier checks the code, so concurrent
    guesses cannot exceed CONSENT_TRIES; the last wrong one fails the order.
    """
    error: FlowbillError | None = None
    async with pool.connection() as conn, conn.transaction():
        order = await _own_transfer_in(conn, user=user, order_id=order_id)
        if order.state != AWAITING_CONSENT:
            return _already_confirmed(order), False
        if order.consent_expires_at is not None and now >= order.consent_expires_at:
            await _fail(conn, order, "consent_expired", now)
            error = ConsentExpired("the code has expired: start a new transfer-in")
        elif order.consent_tries >= CONSENT_TRIES:
            await _fail(conn, order, "consent_tries_exhausted", now)
            error = ConsentFailed("no tries left", reason="consent_tries_exhausted")
        else:
            await repository.take_consent_try(conn, order_id)
    if error is not None:
        raise error
    result = await gateway.verify_transfer_consent(
        carrier=order.carrier_id, request_id=str(order_id), code=code
    )
    async with pool.connection() as conn, conn.transaction():
        order = await _own_transfer_in(conn, user=user, order_id=order_id)
        if order.state != AWAITING_CONSENT:
            # A concurrent try settled it first.
            return _already_confirmed(order), False
        error = await _consent_answer(conn, order, result, now)
        fresh = await repository.get_carrier_order(conn, order_id)
    if error is not None:
        raise error
    assert fresh is not None
    return CarrierOrderPublic.model_validate(fresh), True


async def _own_transfer_in(conn: Connection, *, user: str, order_id: UUID) -> CarrierOrderRow:
    order = await repository.get_carrier_order(conn, order_id, lock=True)
    if order is None or order.user_id != user or order.direction != TRANSFER_IN:
        raise OrderNotFound(f"no transfer-in {order_id}")
    return order


def _already_confirmed(order: CarrierOrderRow) -> CarrierOrderPublic:
    """A confirmation repeated after consent answers the order; a failed one cannot be."""
    if order.state == "failed":
        raise ConsentFailed("this transfer-in has failed", reason=order.reason)
    return CarrierOrderPublic.model_validate(order)


async def _consent_answer(
    conn: Connection, order: CarrierOrderRow, result: GatewayResult, now: datetime
) -> FlowbillError | None:
    """Record what the carrier said of the code; the error to answer, if any."""
    if result.outcome is Outcome.CONFIRMED:
        await repository.record_consent(conn, order.order_id)
        return None
    if result.outcome is not Outcome.FAILED:
        # The try stays counted: a carrier that does not answer must not widen the guessing.
        return CarrierUnavailable("the carrier did not answer: try the same code again")
    tries_left = CONSENT_TRIES - order.consent_tries
    if result.reason == "wrong_code" and tries_left > 0:
        return ConsentCodeWrong("that is not the code sent to the line", tries_left=tries_left)
    if result.reason == "code_expired":
        await _fail(conn, order, "consent_expired", now)
        return ConsentExpired("the code has expired: start a new transfer-in")
    reason = (
        "consent_tries_exhausted"
        if result.reason in {"wrong_code", "too_many_attempts"}
        else result.reason or "consent_refused"
    )
    await _fail(conn, order, reason, now)
    return ConsentFailed("the carrier refused the consent", reason=reason)


async def get_order(conn: Connection, *, user: str, order_id: UUID) -> CarrierOrderPublic:
    order = await repository.get_carrier_order(conn, order_id)
    if order is None or order.user_id != user:
        raise OrderNotFound(f"no carrier order {order_id}")
    return CarrierOrderPublic.model_validate(order)


async def orders(
    conn: Connection, *, user: str, limit: int, cursor: str | None
) -> Page[CarrierOrderPublic]:
    """A user's top-ups and transfers-in, newest first."""
    after = (
        None if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope="carrier-orders")
    )  # fmt: skip
    rows = await repository.carrier_orders_of(conn, user, after=after, limit=limit + 1)
    return paging.page(
        [CarrierOrderPublic.model_validate(row) for row in rows],
        limit=limit, key=lambda order: (order.created_at, order.order_id),
        scope="carrier-orders",
    )  # fmt: skip


async def settle(
    conn: Connection, *, order_id: UUID, result: GatewayResult, now: datetime
) -> CarrierOrderRow | None:
    """Record what the carrier said about an order; settles it at most once.

    CONFIRMED pays the carrier (top-up) or credits the wallet (transfer-in); FAILED releases
    the reservation; PENDING and UNKNOWN leave the order submitted, its reservation kept.
    """
    order = await repository.get_carrier_order(conn, order_id, lock=True)
    # Nothing is taken from a line before its subscriber consented, whatever a carrier says.
    if order is None or order.state in SETTLED or order.state == AWAITING_CONSENT:
        return order
    if result.outcome is Outcome.CONFIRMED:
        await (_confirm_top_up if order.direction == TOP_UP else _confirm_transfer)(
            conn, order, result, now
        )
        metrics.WALLET_ORDERS_SETTLED.labels(order.direction, "confirmed").inc()
    elif result.outcome is Outcome.FAILED:
        await _fail(conn, order, result.reason or "failed", now)
        metrics.WALLET_ORDERS_SETTLED.labels(order.direction, "failed").inc()
    else:
        await repository.update_carrier_order(
            conn, order_id, state="submitted", carrier_ref=result.reference, attempt=True
        )
    return await repository.get_carrier_order(conn, order_id)


async def _confirm_top_up(
    conn: Connection, order: CarrierOrderRow, result: GatewayResult, now: datetime
) -> None:
    txn_id = await service.move(
        conn, key=f"carrier-order:{order.order_id}:confirm", kind="top_up",
        source=(AccountKind.IN_FLIGHT, f"carrier:{order.carrier_id}"),
        destination=(AccountKind.CARRIER, order.carrier_id), asset=service.DATA,
        amount=order.data_mb * MB, memo={"top_up": str(order.order_id)},
    )  # fmt: skip
    await repository.update_carrier_order(
        conn, order.order_id, state="confirmed", carrier_ref=result.reference,
        settle_txn_id=txn_id, settled=True,
    )  # fmt: skip


async def _confirm_transfer(
    conn: Connection, order: CarrierOrderRow, result: GatewayResult, now: datetime
) -> None:
    # Never more than was asked, whatever the carrier confirms.
    mb = min(order.data_mb, _positive_int(result.detail.get("mb"), default=order.data_mb))
    validity_days = _positive_int(result.detail.get("validity_days"), default=30)
    granted = await service.grant(
        conn, key=f"carrier-order:{order.order_id}:credit", funder=order.carrier_id,
        funder_kind=AccountKind.CARRIER, user=order.user_id, data_bytes=mb * MB,
        expires_at=now + timedelta(days=min(validity_days, 730)),
        source=f"transfer-in:{order.carrier_id}", now=now,
        memo={"transfer_in": str(order.order_id), "carrier": order.carrier_id},
    )  # fmt: skip
    await repository.update_carrier_order(
        conn, order.order_id, state="confirmed", carrier_ref=result.reference,
        settle_txn_id=granted.txn_id, lot_id=granted.lot_id, settled=True, credited_mb=mb,
    )  # fmt: skip


def _positive_int(value: object, *, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


async def _fail(conn: Connection, order: CarrierOrderRow, reason: str, now: datetime) -> None:
    settle_txn: int | None = None
    if order.direction == TOP_UP and order.reserve_txn_id is not None:
        released = await service.refund(
            conn, key=f"carrier-order:{order.order_id}:release",
            spend_txn_id=order.reserve_txn_id, data_bytes=order.data_mb * MB, now=now,
        )  # fmt: skip
        settle_txn = released.txn_id
    await repository.update_carrier_order(
        conn, order.order_id, state="failed", reason=reason[:200], settle_txn_id=settle_txn,
        settled=True,
    )  # fmt: skip


async def submit(
    pool: AsyncConnectionPool[Connection],
    gateway: CarrierGateway,
    *,
    order_id: UUID,
    msisdn: str | None,
    callback_url: str | None,
    now: datetime,
) -> None:
    """Send a committed order to its carrier and record the answer (a top-up names its line;
    a transfer-in's line is the one that consented under the order id)."""
    async with pool.connection() as conn:
        order = await repository.get_carrier_order(conn, order_id)
    if order is None or order.state != "reserved":
        return
    if order.direction == TOP_UP:
        assert msisdn is not None
        result = await gateway.submit_top_up(
            carrier=order.carrier_id, request_id=str(order_id), msisdn=msisdn,
            package_mb=order.data_mb, callback_url=callback_url,
        )  # fmt: skip
    else:
        result = await gateway.submit_transfer_in(
            carrier=order.carrier_id, request_id=str(order_id), mb=order.data_mb
        )
    async with pool.connection() as conn, conn.transaction():
        await settle(conn, order_id=order_id, result=result, now=now)


async def reconcile(
    pool: AsyncConnectionPool[Connection],
    gateway: CarrierGateway,
    *,
    now: datetime,
    grace: timedelta,
    limit: int = 500,
) -> ReconcileReport:
    """Ask the carriers about orders left open for longer than `grace`, and settle them.

    `grace` must exceed the gateway timeout: an order younger than that may still be on
    its way to the carrier, and "never received" would then be premature.
    """
    async with pool.connection() as conn, conn.transaction():
        expired = await repository.expire_consents(conn, now=now, limit=limit)
    async with pool.connection() as conn:
        open_orders = await repository.open_carrier_orders(
            conn, older_than=now - grace, limit=limit
        )
    metrics.WALLET_RECONCILED.labels("carrier").inc(len(open_orders))
    confirmed = failed = 0
    for order in open_orders:
        if order.direction == TOP_UP:
            result = await gateway.top_up_status(
                carrier=order.carrier_id, request_id=str(order.order_id)
            )
        else:
            result = await gateway.transfer_status(
                carrier=order.carrier_id, request_id=str(order.order_id)
            )
        async with pool.connection() as conn, conn.transaction():
            settled = await settle(conn, order_id=order.order_id, result=result, now=now)
        if settled is not None and settled.state == "confirmed":
            confirmed += 1
        elif settled is not None and settled.state == "failed":
            failed += 1
        log.info(
            "carrier order reconciled",
            extra={"order_id": str(order.order_id), "outcome": result.outcome.value},
        )
    return ReconcileReport(
        examined=len(open_orders) + expired,
        confirmed=confirmed,
        failed=failed + expired,
        still_open=len(open_orders) - confirmed - failed,
    )
