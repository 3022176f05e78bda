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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flowbill.db import Connection
from wallet.errors import (
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    RefundTooLarge,
    TransactionNotFound,
)
from wallet.repository import ledger as repository
from wallet.repository.ledger import Leg

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
    # A campaign's budget, drawn from its merchant's pool.
    CAMPAIGN = "campaign"
    # Data a carrier or the exchange is working on: back to the lots if it fails.
    IN_FLIGHT = "in_flight"
    # Money users pay (for the money part of exchange items).
    USER_PAYMENTS = "user_payments"


# Accounts standing for outside parties or the platform's own position.
_MAY_GO_NEGATIVE = frozenset(
    {
        AccountKind.MERCHANT_PAYMENTS,
        AccountKind.PLATFORM_DATA,
        AccountKind.CARRIER,
        AccountKind.EXCHANGE,
        AccountKind.USER_PAYMENTS,
    }
)


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
    # False when the key had already been granted: this is the first request's result.
    new: bool = True


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


async def claim(
    conn: Connection,
    *,
    key: str,
    kind: str,
    reverses: int | None = None,
    memo: dict[str, object] | None = None,
    **request: object,
) -> tuple[int, bool]:
    """The transaction for an idempotency key: (txn id, created by this call).

    A repeat of the key for the same request finds the first transaction; for another
    request it is refused.
    """
    if not key or len(key) > 200:
        raise InvalidAmount("an idempotency key of 1 to 200 characters is required")
    digest = _digest(kind, **request)
    txn_id, created, found_kind, found_digest = await repository.claim_key(
        conn, key=key, kind=kind, digest=digest, reverses=reverses, memo=memo or {}
    )
    if not created and (found_kind != kind or found_digest != digest):
        raise IdempotencyKeyReused(f"the key {key!r} was used for a different request")
    return txn_id, created


async def _account(conn: Connection, kind: AccountKind, owner: str, asset: str) -> int:
    return await repository.ensure_account(conn, kind=kind.value, owner=owner, asset=asset)


async def fund_pool(
    conn: Connection, *, key: str, merchant: str, data_bytes: int, price_minor: int, currency: str
) -> Funded:
    """A merchant buys data for its promotion pool: data from the platform, money to it.

    The price is not part of the request's identity: a repeat after a price change
    returns what the first request paid.
    """
    _check_amount(data_bytes, "data_bytes")
    _check_amount(price_minor, "price_minor")
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise InvalidAmount("currency must be an ISO 4217 code such as CNY")
    txn_id, created = await claim(
        conn, key=key, kind="fund_pool", merchant=merchant, data_bytes=data_bytes,
        currency=currency,
    )  # fmt: skip
    if not created:
        paid = sum(e.amount for e in await repository.entries_of(conn, txn_id) if e.amount > 0
                   and e.asset == currency)  # fmt: skip
        return Funded(txn_id=txn_id, data_bytes=data_bytes, price_minor=paid)
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


async def move(
    conn: Connection,
    *,
    key: str,
    kind: str,
    source: tuple[AccountKind, str],
    destination: tuple[AccountKind, str],
    asset: str,
    amount: int,
    memo: dict[str, object] | None = None,
) -> int:
    """Move an amount between two accounts that are not wallets; returns the transaction.

    Accounts that may not go negative refuse with InsufficientBalance.
    """
    txn_id, created = await claim(
        conn, key=key, kind=kind, memo=memo, source=list(source), destination=list(destination),
        asset=asset, amount=amount,
    )  # fmt: skip
    if created:
        await post_move(
            conn, txn_id, source=source, destination=destination, asset=asset, amount=amount
        )
    return txn_id


async def post_move(
    conn: Connection,
    txn_id: int,
    *,
    source: tuple[AccountKind, str],
    destination: tuple[AccountKind, str],
    asset: str,
    amount: int,
    memo: dict[str, object] | None = None,
) -> None:
    """Post a claimed transaction that moves an amount between two accounts."""
    _check_amount(amount, "amount")
    if AccountKind.USER_WALLET in (source[0], destination[0]):
        raise InvalidAmount("wallets move through grant, spend and refund")
    debit = await _account(conn, source[0], source[1], asset)
    credit = await _account(conn, destination[0], destination[1], asset)
    # Accounts with a cached balance are locked and checked; data in flight is moved only by
    # the order that put it there (and `check_books` proves no account went below zero).
    if source[0].value in repository.CACHED_KINDS and (
        await repository.lock_account(conn, debit) < amount
    ):
        raise InsufficientBalance(f"the {source[0].value} account holds less than {amount}")
    await repository.post_legs(
        conn, txn_id, [Leg(debit, asset, -amount), Leg(credit, asset, amount)]
    )
    if memo:
        await repository.set_memo(conn, txn_id, memo)


async def grant(
    conn: Connection,
    *,
    key: str,
    funder: str,
    user: str,
    data_bytes: int,
    expires_at: datetime,
    source: str,
    now: datetime,
    funder_kind: AccountKind = AccountKind.MERCHANT_POOL,
    memo: dict[str, object] | None = None,
) -> Granted:
    """Credit a user's wallet with a lot that expires, from a pool, campaign or carrier."""
    _check_amount(data_bytes, "data_bytes")
    if expires_at <= now:
        raise InvalidAmount("a grant must expire in the future")
    txn_id, created = await claim(
        conn, key=key, kind="grant", memo=memo, funder=funder, funder_kind=funder_kind.value,
        user=user, data_bytes=data_bytes, expires_at=expires_at.isoformat(), source=source,
    )  # fmt: skip
    if not created:
        entries = await repository.entries_of(conn, txn_id)
        lot_id = next(e.lot_id for e in entries if e.lot_id is not None)
        return Granted(txn_id=txn_id, lot_id=lot_id, data_bytes=data_bytes, new=False)
    if funder_kind in _MAY_GO_NEGATIVE:
        account: int | None = await _account(conn, funder_kind, funder, DATA)
    else:
        account = await repository.find_account(
            conn, kind=funder_kind.value, owner=funder, asset=DATA
        )
        if account is None or await repository.lock_account(conn, account) < data_bytes:
            raise InsufficientBalance(f"the {funder_kind.value} cannot fund this grant")
    assert account is not None
    wallet = await _account(conn, AccountKind.USER_WALLET, user, DATA)
    lot_id = await repository.insert_lot(
        conn, account_id=wallet, source=source, funded_by=account, amount=data_bytes,
        expires_at=expires_at, txn_id=txn_id,
    )  # fmt: skip
    await repository.post_legs(
        conn, txn_id, [Leg(account, DATA, -data_bytes), Leg(wallet, DATA, data_bytes, lot_id)]
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
    memo: dict[str, object] | None = None,
) -> Spent:
    """Take data from a user's wallet, earliest-expiring lots first, to a destination."""
    _check_amount(data_bytes, "data_bytes")
    if to_kind in {AccountKind.USER_WALLET, AccountKind.MERCHANT_POOL, AccountKind.CAMPAIGN}:
        raise InvalidAmount("data is spent to a carrier, the exchange or breakage")
    txn_id, created = await claim(
        conn, key=key, kind="spend", memo=memo, user=user, data_bytes=data_bytes,
        to_kind=to_kind.value, to_owner=to_owner,
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
    destination = await _account(conn, to_kind, to_owner, DATA)
    # One round trip (migrations/0007): locks the wallet, so concurrent spends never overdraw.
    taken = await repository.take_from_wallet(
        conn, txn_id=txn_id, wallet=wallet, amount=data_bytes, destination=destination, now=now
    )
    if not taken:
        raise InsufficientBalance("the wallet holds less unexpired data than asked")
    return Spent(
        txn_id=txn_id,
        data_bytes=data_bytes,
        lots=tuple(LotShare(lot_id, amount) for lot_id, amount in taken),
    )


@dataclass(frozen=True, slots=True)
class Draw:
    """One user's spend in a `spend_many`."""

    key: str
    user: str
    data_bytes: int
    memo: dict[str, object]


async def lock_wallets(conn: Connection, *, users: Sequence[str]) -> None:
    """Hold the users' wallets until the caller's transaction ends: every spend, refund, grant
    and expiry of them waits, so balances read now are still there to draw at the end."""
    await repository.lock_wallets(conn, users)


async def spend_many(
    conn: Connection,
    draws: Sequence[Draw],
    *,
    to_kind: AccountKind,
    to_owner: str,
    now: datetime,
) -> list[Spent]:
    """Many users' spends to one destination in a handful of round trips, exactly as `spend`
    would make them one by one (same keys and request digests, same lots, same entries); the
    allocation run draws a whole batch's user shares this way. A key seen before answers its
    first result. InsufficientBalance if any wallet holds too little: the caller's transaction
    must then roll back, as it holds the others' spends."""
    if to_kind in {AccountKind.USER_WALLET, AccountKind.MERCHANT_POOL, AccountKind.CAMPAIGN}:
        raise InvalidAmount("data is spent to a carrier, the exchange or breakage")
    for draw in draws:
        _check_amount(draw.data_bytes, "data_bytes")
        if not draw.key or len(draw.key) > 200:
            raise InvalidAmount("an idempotency key of 1 to 200 characters is required")
    created = await repository.claim_keys(
        conn,
        kind="spend",
        claims=[
            (d.key, _digest("spend", user=d.user, data_bytes=d.data_bytes,
                            to_kind=to_kind.value, to_owner=to_owner), d.memo)
            for d in draws
        ],
    )  # fmt: skip
    fresh = [d for d in draws if d.key in created]
    wallets = await repository.wallets_of(conn, [d.user for d in fresh])
    if any(d.user not in wallets for d in fresh):
        raise InsufficientBalance("the wallet is empty")
    destination = await _account(conn, to_kind, to_owner, DATA)
    takes = sorted(
        ((created[d.key], wallets[d.user], d.data_bytes) for d in fresh), key=lambda t: t[1]
    )
    taken = await repository.take_from_wallets(conn, takes, destination=destination, now=now)
    if len(taken) < len(takes):
        raise InsufficientBalance("a wallet holds less unexpired data than asked")
    spent = []
    for draw in draws:
        if draw.key in created:
            txn_id = created[draw.key]
            lots = tuple(LotShare(lot_id, amount) for lot_id, amount in taken[txn_id])
            spent.append(Spent(txn_id=txn_id, data_bytes=draw.data_bytes, lots=lots))
        else:  # a repeat: `spend` checks the request and answers the first result
            again = await spend(
                conn, key=draw.key, user=draw.user, data_bytes=draw.data_bytes,
                to_kind=to_kind, to_owner=to_owner, now=now, memo=draw.memo,
            )  # fmt: skip
            spent.append(again)
    return spent


async def refund(
    conn: Connection,
    *,
    key: str,
    spend_txn_id: int,
    data_bytes: int,
    now: datetime,
    take_from: tuple[AccountKind, str] | None = None,
) -> Refunded:
    """Give back part or all of a spend to the lots it came from, with their expiry.

    The data comes back from where the spend sent it, or from `take_from` when it has
    moved on since (a settled exchange order). Data of lots that have expired since goes
    to breakage instead. The latest-expiring lots are refilled first.
    """
    _check_amount(data_bytes, "data_bytes")
    if await repository.transaction_kind(conn, spend_txn_id) != "spend":
        raise TransactionNotFound(f"no spend {spend_txn_id}")
    txn_id, created = await claim(
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
    if take_from is None:
        holder = next(e for e in spent if e.lot_id is None and e.amount > 0).account_id
    else:
        holder = await _account(conn, take_from[0], take_from[1], DATA)
    legs = [Leg(holder, DATA, -data_bytes)]
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
    nothing left. Concurrent sweeps skip each other's lots. The lots' wallets are locked
    first, in account order, as every other debit locks them: a sweep and an allocation
    batch holding many wallets can wait for each other but never deadlock.
    """
    wallets = await repository.lock_wallets_with_expired_lots(conn, now=now, limit=limit)
    lots = await repository.expired_lots(conn, now=now, limit=limit, wallets=wallets)
    if not lots:
        return 0
    breakage = await _account(conn, AccountKind.BREAKAGE, PLATFORM, DATA)
    for lot in lots:
        txn_id, created = await claim(
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
