"""The data wallet's ledger: funding, grants, spending, refunds and expiry.

Every movement is one balanced transaction (per asset) under an idempotency key: a repeat
of the key with the same request returns the first result, with another request it is
refused. Data credited to a user is a lot with an expiry; spending takes the earliest-
expiring lots first and records which lots paid; a refund returns data to those lots (or
to breakage if they expired since); the expiry sweep moves what is left in expired lots to
breakage. Services never commit: the caller owns the transaction.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from flowbill.db import Connection
from wallet import repository
from wallet.errors import (
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    RefundTooLarge,
    TransactionNotFound,
)
from wallet.repository import Leg

DATA = "data"
PLATFORM = "platform"
# A sanity ceiling on one movement: 1 PiB of data, or 10^15 minor units of money.
MAX_AMOUNT = 2**50


class AccountKind(enum.StrEnum):
    USER_WALLET = "user_wallet"
    MERCHANT_POOL = "merchant_pool"
    MERCHANT_PAYMENTS = "merchant_payments"
    PLATFORM_DATA = "platform_data"
    PLATFORM_REVENUE = "platform_revenue"
    CARRIER = "carrier"
    BREAKAGE = "breakage"
    EXCHANGE = "exchange"


@dataclass(frozen=True, slots=True)
class Funded:
    txn_id: int
    data_bytes: int
    price_minor: int


@dataclass(frozen=True, slots=True)
class Granted:
    txn_id: int
    lot_id: int
    data_bytes: int


@dataclass(frozen=True, slots=True)
class LotShare:
    lot_id: int
    data_bytes: int


@dataclass(frozen=True, slots=True)
class Spent:
    txn_id: int
    data_bytes: int
    lots: tuple[LotShare, ...]


@dataclass(frozen=True, slots=True)
class Refunded:
    txn_id: int
    to_wallet: tuple[LotShare, ...]
    to_breakage: tuple[LotShare, ...]


def _check_amount(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise InvalidAmount(f"{what} must be a whole number from 1 to {MAX_AMOUNT}")


def _digest(kind: str, **request: object) -> bytes:
    canonical = json.dumps({"kind": kind, **request}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).digest()


async def _claim(
    conn: Connection, *, key: str, kind: str, reverses: int | None = None, **request: object
) -> tuple[int, bool]:
    if not key or len(key) > 200:
        raise InvalidAmount("an idempotency key of 1 to 200 characters is required")
    digest = _digest(kind, **request)
    txn_id, created, found_kind, found_digest = await repository.claim_key(
        conn, key=key, kind=kind, digest=digest, reverses=reverses
    )
    if not created and (found_kind != kind or found_digest != digest):
        raise IdempotencyKeyReused(f"the key {key!r} was used for a different request")
    return txn_id, created


async def _account(conn: Connection, kind: AccountKind, owner: str, asset: str) -> int:
    return await repository.ensure_account(conn, kind=kind.value, owner=owner, asset=asset)


async def fund_pool(
    conn: Connection, *, key: str, merchant: str, data_bytes: int, price_minor: int, currency: str
) -> Funded:
    """A merchant buys data for its promotion pool: data from the platform, money to it."""
    _check_amount(data_bytes, "data_bytes")
    _check_amount(price_minor, "price_minor")
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise InvalidAmount("currency must be an ISO 4217 code such as CNY")
    txn_id, created = await _claim(
        conn, key=key, kind="fund_pool", merchant=merchant, data_bytes=data_bytes,
        price_minor=price_minor, currency=currency,
    )  # fmt: skip
    if created:
        platform = await _account(conn, AccountKind.PLATFORM_DATA, PLATFORM, DATA)
        pool = await _account(conn, AccountKind.MERCHANT_POOL, merchant, DATA)
        payer = await _account(conn, AccountKind.MERCHANT_PAYMENTS, merchant, currency)
        revenue = await _account(conn, AccountKind.PLATFORM_REVENUE, PLATFORM, currency)
        await repository.post_legs(
            conn,
            txn_id,
            [
                Leg(platform, DATA, -data_bytes),
                Leg(pool, DATA, data_bytes),
                Leg(payer, currency, -price_minor),
                Leg(revenue, currency, price_minor),
            ],
        )
    return Funded(txn_id=txn_id, data_bytes=data_bytes, price_minor=price_minor)


async def grant(
    conn: Connection,
    *,
    key: str,
    merchant: str,
    user: str,
    data_bytes: int,
    expires_at: datetime,
    source: str,
    now: datetime,
) -> Granted:
    """Move data from a merchant's pool into a user's wallet, as a lot with an expiry."""
    _check_amount(data_bytes, "data_bytes")
    if expires_at <= now:
        raise InvalidAmount("a grant must expire in the future")
    txn_id, created = await _claim(
        conn, key=key, kind="grant", merchant=merchant, user=user, data_bytes=data_bytes,
        expires_at=expires_at.isoformat(), source=source,
    )  # fmt: skip
    if not created:
        entries = await repository.entries_of(conn, txn_id)
        lot_id = next(e.lot_id for e in entries if e.lot_id is not None)
        return Granted(txn_id=txn_id, lot_id=lot_id, data_bytes=data_bytes)
    pool = await repository.find_account(
        conn, kind=AccountKind.MERCHANT_POOL.value, owner=merchant, asset=DATA
    )
    if pool is None or await repository.lock_account(conn, pool) < data_bytes:
        raise InsufficientBalance("the merchant's data pool cannot fund this grant")
    wallet = await _account(conn, AccountKind.USER_WALLET, user, DATA)
    lot_id = await repository.insert_lot(
        conn, account_id=wallet, source=source, funded_by=pool, amount=data_bytes,
        expires_at=expires_at, txn_id=txn_id,
    )  # fmt: skip
    await repository.post_legs(
        conn, txn_id, [Leg(pool, DATA, -data_bytes), Leg(wallet, DATA, data_bytes, lot_id)]
    )
    return Granted(txn_id=txn_id, lot_id=lot_id, data_bytes=data_bytes)


def _shares(entries: list[Leg], account_id: int, sign: int) -> tuple[LotShare, ...]:
    return tuple(
        LotShare(e.lot_id, sign * e.amount)
        for e in entries
        if e.account_id == account_id and e.lot_id is not None and sign * e.amount > 0
    )


async def spend(
    conn: Connection,
    *,
    key: str,
    user: str,
    data_bytes: int,
    to_kind: AccountKind,
    to_owner: str,
    now: datetime,
) -> Spent:
    """Take data from a user's wallet, earliest-expiring lots first, to a destination."""
    _check_amount(data_bytes, "data_bytes")
    if to_kind in {AccountKind.USER_WALLET, AccountKind.MERCHANT_POOL}:
        raise InvalidAmount("data is spent to a carrier, the exchange or breakage")
    txn_id, created = await _claim(
        conn, key=key, kind="spend", user=user, data_bytes=data_bytes, to_kind=to_kind.value,
        to_owner=to_owner,
    )  # fmt: skip
    wallet = await repository.find_account(
        conn, kind=AccountKind.USER_WALLET.value, owner=user, asset=DATA
    )
    if not created:
        assert wallet is not None
        entries = await repository.entries_of(conn, txn_id)
        return Spent(txn_id=txn_id, data_bytes=data_bytes, lots=_shares(entries, wallet, -1))
    if wallet is None:
        raise InsufficientBalance("the wallet is empty")
    # The wallet's row lock serialises its debits: concurrent spends never overdraw it.
    await repository.lock_account(conn, wallet)
    lots = await repository.spendable_lots(conn, wallet, now=now)
    if sum(lot.remaining for lot in lots) < data_bytes:
        raise InsufficientBalance("the wallet holds less unexpired data than asked")
    left = data_bytes
    legs: list[Leg] = []
    for lot in lots:
        take = min(left, lot.remaining)
        legs.append(Leg(wallet, DATA, -take, lot.lot_id))
        await repository.change_lot(conn, lot.lot_id, -take)
        left -= take
        if left == 0:
            break
    destination = await _account(conn, to_kind, to_owner, DATA)
    legs.append(Leg(destination, DATA, data_bytes))
    await repository.post_legs(conn, txn_id, legs)
    return Spent(txn_id=txn_id, data_bytes=data_bytes, lots=_shares(legs, wallet, -1))


async def refund(
    conn: Connection, *, key: str, spend_txn_id: int, data_bytes: int, now: datetime
) -> Refunded:
    """Give back part or all of a spend to the lots it came from, with their expiry.

    Data of lots that have expired since goes to breakage instead. The latest-expiring
    lots are refilled first.
    """
    _check_amount(data_bytes, "data_bytes")
    if await repository.transaction_kind(conn, spend_txn_id) != "spend":
        raise TransactionNotFound(f"no spend {spend_txn_id}")
    txn_id, created = await _claim(
        conn, key=key, kind="refund", reverses=spend_txn_id, spend_txn_id=spend_txn_id,
        data_bytes=data_bytes,
    )  # fmt: skip
    spent = await repository.entries_of(conn, spend_txn_id)
    wallet = next(e.account_id for e in spent if e.lot_id is not None)
    breakage = await _account(conn, AccountKind.BREAKAGE, PLATFORM, DATA)
    if not created:
        entries = await repository.entries_of(conn, txn_id)
        return Refunded(
            txn_id=txn_id,
            to_wallet=_shares(entries, wallet, 1),
            to_breakage=_shares(entries, breakage, 1),
        )
    await repository.lock_account(conn, wallet)
    taken = {e.lot_id: -e.amount for e in spent if e.lot_id is not None}
    already = await repository.refunded_per_lot(conn, spend_txn_id)
    lots = await repository.lots_by_id(conn, list(taken))
    refundable = {lot_id: taken[lot_id] - already.get(lot_id, 0) for lot_id in taken}
    if sum(refundable.values()) < data_bytes:
        raise RefundTooLarge(f"only {sum(refundable.values())} bytes of this spend are left")
    destination = next(e for e in spent if e.lot_id is None and e.amount > 0)
    legs = [Leg(destination.account_id, DATA, -data_bytes)]
    left = data_bytes
    for lot_id in sorted(taken, key=lambda i: (lots[i].expires_at, i), reverse=True):
        give = min(left, refundable[lot_id])
        if give <= 0:
            continue
        if lots[lot_id].expires_at > now:
            legs.append(Leg(wallet, DATA, give, lot_id))
            await repository.change_lot(conn, lot_id, give)
        else:
            legs.append(Leg(breakage, DATA, give, lot_id))
        left -= give
        if left == 0:
            break
    await repository.post_legs(conn, txn_id, legs)
    return Refunded(
        txn_id=txn_id, to_wallet=_shares(legs, wallet, 1), to_breakage=_shares(legs, breakage, 1)
    )


async def expire_lots(conn: Connection, *, now: datetime, limit: int = 1000) -> int:
    """Move what is left in expired lots to breakage; returns how many lots expired.

    Idempotent: each lot expires once (its key names it), and a lot already swept has
    nothing left. Concurrent sweeps skip each other's lots.
    """
    lots = await repository.expired_lots(conn, now=now, limit=limit)
    if not lots:
        return 0
    breakage = await _account(conn, AccountKind.BREAKAGE, PLATFORM, DATA)
    for lot in lots:
        txn_id, created = await _claim(
            conn, key=f"expiry:lot:{lot.lot_id}", kind="expiry", lot_id=lot.lot_id
        )
        if not created:
            continue
        await repository.change_lot(conn, lot.lot_id, -lot.remaining)
        await repository.post_legs(
            conn,
            txn_id,
            [
                Leg(lot.account_id, DATA, -lot.remaining, lot.lot_id),
                Leg(breakage, DATA, lot.remaining, lot.lot_id),
            ],
        )
    return len(lots)


async def balance(conn: Connection, *, user: str) -> int:
    """Bytes in a user's wallet (expired lots not yet swept included)."""
    wallet = await repository.find_account(
        conn, kind=AccountKind.USER_WALLET.value, owner=user, asset=DATA
    )
    return 0 if wallet is None else await repository.account_balance(conn, wallet)


async def lots(conn: Connection, *, user: str) -> list[repository.LotRow]:
    """A user's lots with data left, earliest expiry first."""
    wallet = await repository.find_account(
        conn, kind=AccountKind.USER_WALLET.value, owner=user, asset=DATA
    )
    return [] if wallet is None else await repository.lots_of(conn, wallet, with_empty=False)


async def check_books(conn: Connection) -> list[str]:
    """Prove the books: balanced transactions, true cached balances, lots that add up."""
    return await repository.books_problems(conn)
