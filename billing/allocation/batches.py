"""The allocation run: every stored usage item, allocated exactly once to its payers.

The run reads items by the transaction that stored them: everything below the oldest
transaction still running is final, so a cursor over transaction ids never skips an item
that commits late, and a batch is a whole number of ingest transactions. One batch is one
transaction of ours: allocation rows, the policies' spend (drawn down once per batch, not per
row), the wallets' draws and the cursor commit together or not at all, so a rerun, a crash
or a second runner changes nothing. The batch's drivers' wallets are locked before their
balances are read, so spending elsewhere waits for the batch rather than failing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from billing.allocation import repository
from billing.allocation.booking import Booking
from flowbill import metrics
from flowbill.db import Connection
from flowbill.periods import Calendar
from flowbill.settings import Settings
from sponsors import catalogue
from sponsors import service as sponsors
from sponsors.allocation import (
    Budget,
    Item,
    PayerKind,
    PolicyBook,
    Share,
    SimView,
    Spend,
    allocate,
    terms_in_force,
)
from wallet import reports as wallet_reports
from wallet import service as wallet
from webhooks import service as webhooks

log = logging.getLogger(__name__)

CAP_EVENT = "policy.cap_threshold_reached"
BUDGET_EVENT = "policy.budget_threshold_reached"
# Where the user's share of traffic goes in the wallet's ledger.
TRAFFIC_OWNER = "traffic"
_EPOCH = date(1970, 1, 1)
# Transaction ids the run looks at first for the next batch's items (it widens the range while
# it finds too few, and narrows it again when it finds far too many).
_XID_SPAN = 256
# Items computed at a time: while the server stores one chunk's rows, the run computes the next.
CHUNK_ITEMS = 5_000


@dataclass(slots=True)
class BatchOutcome:
    batch_id: int | None
    items: int
    allocations: int
    adjustments: int = 0
    # SIMs whose coverage may have changed, and policies whose budget ran out.
    touched_sims: set[str] = field(default_factory=set)
    exhausted_policies: set[int] = field(default_factory=set)
    # Whether more final items are waiting.
    more: bool = False


async def wait_for_batches(conn: Connection) -> None:
    """Wait until no allocation batch is under way; none starts until the caller commits (a
    period is closed so: every later batch sees the later clock and books it as closed)."""
    await repository.wait_for_run(conn)


class AllocationRun:
    """Allocates batches; keeps the policy book between batches while terms are unchanged."""

    def __init__(self, settings: Settings, *, reader: Connection | None = None) -> None:
        self.calendar = Calendar.from_settings(settings)
        self.batch_items = settings.billing_batch_items
        self._book: tuple[PolicyBook, dict[int, Budget]] | None = None
        self._book_version: tuple[datetime | None, int] | None = None
        # An autocommit connection that reads the next batch's items while this one is
        # allocated and written: those items are final, so reading them early is safe.
        self._reader = reader
        self._prefetch: tuple[tuple[int, int], asyncio.Task[_Read]] | None
        self._prefetch = None
        self._xid_span = _XID_SPAN
        # (cursor, items per transaction from there on, end of that count) as the last batch
        # left them: the next batch's count, if that batch commits.
        self._known: tuple[int, list[tuple[int, int]], int] | None = None

    def _choose(self, counts: list[tuple[int, int]]) -> int:
        """The last transaction of a batch that starts with `counts[0]`."""
        to_xid, taken = counts[0][0], 0
        for xid, count in counts:
            if taken and taken + count > self.batch_items:
                break
            to_xid, taken = xid, taken + count
        return to_xid

    async def _counts(
        self, conn: Connection, from_xid: int, horizon: int
    ) -> tuple[list[tuple[int, int]], int]:
        """Items per transaction from the cursor on, and where the range counted ends.

        A backlog can be long: counting all of it for every batch would cost more than
        allocating it. So the run counts just enough transaction ids for a few batches, and
        the next batch uses what is left of that count while it holds a whole batch (those
        transactions have ended: their counts are final)."""
        known, self._known = self._known, None
        if known is not None and known[0] == from_xid:
            counts, until = known[1], known[2]
            if sum(count for _, count in counts) >= self.batch_items:
                return counts, until
        while True:
            until = min(horizon, from_xid + self._xid_span)
            counts = await repository.items_per_transaction(
                conn, from_xid=from_xid, until_xid=until
            )
            found = sum(count for _, count in counts)
            if until == horizon or found >= 4 * self.batch_items:
                break
            self._xid_span *= 2
        if found > 8 * self.batch_items:
            self._xid_span = max(self._xid_span // 2, 16)
        return counts, until

    async def _items(self, conn: Connection, from_xid: int, to_xid: int) -> _Read:
        prefetched, self._prefetch = self._prefetch, None
        if prefetched is not None:
            span, task = prefetched
            if span == (from_xid, to_xid):
                try:
                    return await task
                except psycopg.Error as exc:
                    log.warning("read-ahead failed; reading again", extra={"error": str(exc)})
            else:
                await _drop(task)
        return await _read(conn, from_xid, to_xid)

    async def close(self) -> None:
        """Drop a read-ahead under way (before its connection closes)."""
        if self._prefetch is not None:
            await _drop(self._prefetch[1])
            self._prefetch = None

    def _read_ahead(self, remaining: list[tuple[int, int]]) -> None:
        if self._reader is None or not remaining or self._reader.closed:
            return
        span = (remaining[0][0], self._choose(remaining))
        task = asyncio.create_task(_read(self._reader, span[0], span[1]), name="billing-read-ahead")
        self._prefetch = (span, task)

    async def policy_book(self, conn: Connection) -> tuple[PolicyBook, dict[int, Budget]]:
        version = await sponsors.terms_version(conn)
        if self._book is None or version != self._book_version:
            self._book = await sponsors.policy_book(conn)
            self._book_version = version
        return self._book

    async def batch(self, conn: Connection, *, now: datetime) -> BatchOutcome | None:
        """Allocate the next batch inside the caller's transaction; None when another run
        holds the lock."""
        if not await repository.try_run_lock(conn):
            return None
        # The clock is read again under the lock: closing a month waits for this lock, so a
        # batch that runs after an invoice was issued always books its month as closed.
        now = max(now, datetime.now(UTC))
        started = time.perf_counter()
        from_xid, horizon = await repository.cursor_and_horizon(conn)
        counts, until = await self._counts(conn, from_xid, horizon)
        if not counts:
            await repository.advance_cursor(conn, until)
            return BatchOutcome(None, 0, 0)
        to_xid = self._choose(counts)
        remaining = [(xid, count) for xid, count in counts if xid > to_xid]
        next_xid = remaining[0][0] if remaining else until
        self._known = (next_xid, remaining, until)
        rows, sims = await self._items(conn, from_xid, to_xid)
        batch_id = await repository.next_batch_id(conn)
        # The next batch is read once this one's rows are computed: reading it sooner would take
        # this thread from computing, while for the rest of the batch it mostly waits on the
        # server.
        outcome = await self._allocate(
            conn,
            rows,
            sims,
            batch_id=batch_id,
            now=now,
            computed=lambda: self._read_ahead(remaining),
        )
        outcome.more = bool(remaining) or until < horizon
        oldest = min((r[6] for r in rows), default=None)
        await repository.finish_batch(
            conn, batch_id=batch_id, from_xid=from_xid, to_xid=to_xid, next_xid=next_xid,
            items=len(rows), allocations=outcome.allocations,
            data_bytes=sum(r[5] for r in rows), adjustments=outcome.adjustments,
            oldest_received_at=oldest,
        )  # fmt: skip
        if oldest is not None:
            metrics.BILLING_LAG_SECONDS.set(max((now - oldest).total_seconds(), 0.0))
        metrics.BILLING_BATCH_SECONDS.observe(time.perf_counter() - started)
        return outcome

    async def _allocate(
        self,
        conn: Connection,
        rows: list[repository.ItemTuple],
        sims: dict[str, SimView],
        *,
        batch_id: int,
        now: datetime,
        computed: Callable[[], None],
    ) -> BatchOutcome:
        booking = Booking(self.calendar, now)
        booked, periods = _booked(rows, booking)
        adjustments = sum(b[1] for b in booked)
        categories = await catalogue.categories(conn)
        book, budgets = await self.policy_book(conn)
        spend = await self._spend(conn, book, budgets, sims, periods)
        before = Spend(
            cap_used=dict(spend.cap_used),
            budgets=spend.budgets,
            used_bytes=dict(spend.used_bytes),
            used_money=dict(spend.used_money),
        )
        # Every driver of the batch's SIMs: what is left of an item after its sponsors is
        # only known chunk by chunk.
        drivers = sorted({str(s.driver_id) for s in sims.values() if s.driver_id is not None})
        # Locked before their balances are read, so a redemption, return or expiry sweep
        # meanwhile waits for this batch instead of leaving the draw short (and the batch to
        # roll back): see docs/security.md, "Allocation under concurrent spending".
        await wallet.lock_wallets(conn, users=drivers)
        balances = await wallet_reports.spendable(conn, users=drivers, now=now)
        wallets = {UUID(d): b for d, b in balances.items() if b > 0}
        start_wallets = dict(wallets)
        # Chunk after chunk, `spend` carries what the chunks before drew from caps, budgets
        # and wallets: computing a batch in chunks changes nothing.
        spend.wallets = wallets

        totals = _Totals(batch_id)

        def compute(first: int, end: int) -> list[repository.AllocationRow]:
            items = [
                Item(ws, iccid, boot, seq, app, data_bytes, period, adjustment, day)
                for (ws, iccid, boot, seq, app, data_bytes, _), (period, adjustment, day) in zip(
                    rows[first:end], booked[first:end], strict=True
                )
            ]
            shares = allocate(
                items, sims=sims, categories=categories, candidates=book.candidates, spend=spend,
                in_order=True,
            )  # fmt: skip
            return totals.rows(shares)

        allocations = await self._store_shares(conn, len(rows), compute=compute)
        computed()
        daily = totals.daily_rows()
        await repository.add_daily(conn, daily)
        draws = await self._draw_wallets(conn, start_wallets, wallets, batch_id=batch_id, now=now)
        await repository.record_wallet_draws(conn, batch_id, draws)
        changed = [
            (pid, spend.used_bytes[pid], spend.used_money[pid])
            for pid in sorted(spend.used_bytes)
            if spend.used_bytes[pid] != before.used_bytes.get(pid, 0)
        ]
        await sponsors.record_spend(conn, changed, _changed_caps(before, spend))
        exhausted = await self._alerts(conn, book, before, spend, now=now)
        _count(len(rows), adjustments, daily)
        touched = {r[1] for r in rows}
        # A wallet drawn dry changes the coverage of every SIM its driver owns.
        dry = [str(d) for d, left in wallets.items() if left == 0 and start_wallets.get(d)]
        if dry:
            touched.update(await sponsors.sims_of_drivers(conn, [UUID(d) for d in dry]))
        return BatchOutcome(batch_id, len(rows), allocations, adjustments, touched, exhausted)

    @staticmethod
    async def _store_shares(
        conn: Connection,
        items: int,
        *,
        compute: Callable[[int, int], list[repository.AllocationRow]],
    ) -> int:
        """Compute the allocation rows of the batch's items chunk by chunk, in canonical order
        (`compute(first item, end)`), and store them; returns how many. The rows go out
        through one COPY: the server stores each chunk while the next one is computed here,
        which is where the two sides' time overlaps."""
        stored = 0
        async with repository.allocation_copy(conn) as copy:
            # A short first chunk: the server has nothing to do until it arrives.
            starts = [0, *range(min(max(CHUNK_ITEMS // 5, 1), items), items, CHUNK_ITEMS)]
            for first, end in zip(starts, [*starts[1:], items], strict=True):
                rows = compute(first, end)
                for row in rows:
                    await copy.write_row(row)
                stored += len(rows)
                # Let the COPY's task send the queued rows before the next chunk keeps this
                # thread busy.
                await asyncio.sleep(0)
        return stored

    async def _spend(
        self,
        conn: Connection,
        book: PolicyBook,
        budgets: dict[int, Budget],
        sims: dict[str, SimView],
        periods: set[date],
    ) -> Spend:
        automakers = {s.automaker_id for s in sims.values()}
        policy_ids = sorted(
            h[0].policy_id
            for h in book.histories
            if any(t.scope.automaker_id in automakers for t in h)
        )
        # Locked for the batch: the budget is drawn once per batch, in policy order.
        used = await sponsors.spend_for_update(conn, policy_ids)
        cap_used = await sponsors.caps_used(conn, policy_ids, sorted(periods), sorted(sims))
        return Spend(
            cap_used=cap_used,
            budgets={
                pid: budgets[pid]
                for pid in policy_ids
                if budgets[pid].bytes_limit is not None or budgets[pid].money_limit is not None
            },
            used_bytes={pid: used.get(pid, (0, Decimal(0)))[0] for pid in policy_ids},
            used_money={pid: used.get(pid, (0, Decimal(0)))[1] for pid in policy_ids},
        )

    async def _draw_wallets(
        self,
        conn: Connection,
        start: dict[UUID, int],
        left: dict[UUID, int],
        *,
        batch_id: int,
        now: datetime,
    ) -> list[tuple[UUID, int, int]]:
        drivers = [d for d in sorted(start) if start[d] > left[d]]
        spent = await wallet.spend_many(
            conn,
            [
                wallet.Draw(key=f"billing:{batch_id}:{d}", user=str(d),
                            data_bytes=start[d] - left[d],
                            memo={"reason": "traffic", "batch_id": batch_id})
                for d in drivers
            ],
            to_kind=wallet.AccountKind.PLATFORM_DATA, to_owner=TRAFFIC_OWNER, now=now,
        )  # fmt: skip
        return [(d, s.data_bytes, s.txn_id) for d, s in zip(drivers, spent, strict=True)]

    async def _alerts(
        self, conn: Connection, book: PolicyBook, before: Spend, after: Spend, *, now: datetime
    ) -> set[int]:
        """Record the cap and budget thresholds this batch crossed, each once, and send them;
        returns the policies whose budget ran out."""
        terms = {h[-1].policy_id: terms_in_force(h, now) or h[-1] for h in book.histories}
        sponsor_of = {pid: t.sponsor_id for pid, t in terms.items()}
        thresholds = await sponsors.alert_thresholds_of(conn, sorted(set(sponsor_of.values())))
        crossed: list[tuple[int, str, str, date, int]] = []
        details: dict[tuple[int, str, str, date, int], dict[str, object]] = {}
        for key, used in after.cap_used.items():
            pid, period, iccid = key
            cap = terms[pid].cap_bytes if pid in terms else None
            if cap is None:
                continue
            was = before.cap_used.get(key, 0)
            for percent in thresholds(sponsor_of[pid])[0]:
                if was * 100 < percent * cap <= used * 100:
                    alert = (pid, "cap", iccid, period, percent)
                    crossed.append(alert)
                    details[alert] = {
                        "policy_id": pid, "iccid": iccid, "period": period.isoformat(),
                        "percent": percent, "cap_bytes": cap, "used_bytes": used,
                    }  # fmt: skip
        exhausted = set()
        for pid in after.used_bytes:
            if pid not in terms:
                continue
            share_before = _budget_fraction(before, pid)
            share_after = _budget_fraction(after, pid)
            if share_after is None or share_before is None:
                continue
            if after.budget_left(terms[pid]) == 0 and before.budget_left(terms[pid]) != 0:
                exhausted.add(pid)
            for percent in thresholds(sponsor_of[pid])[1]:
                if share_before * 100 < percent <= share_after * 100:
                    alert = (pid, "budget", "", _EPOCH, percent)
                    crossed.append(alert)
                    budget = after.budgets[pid]
                    details[alert] = {
                        "policy_id": pid, "percent": percent,
                        "budget_bytes": budget.bytes_limit,
                        "budget": None if budget.money_limit is None else str(budget.money_limit),
                        "used_bytes": after.used_bytes[pid],
                        "used_money": str(after.used_money[pid]),
                    }  # fmt: skip
        for alert in await sponsors.record_alerts(conn, crossed):
            pid, kind, iccid, period, percent = alert
            metrics.BILLING_ALERTS.labels(kind).inc()
            await webhooks.enqueue(
                conn,
                tenant_id=sponsor_of[pid],
                event_type=CAP_EVENT if kind == "cap" else BUDGET_EVENT,
                event_key=f"policy:{pid}:{kind}:{iccid}:{period.isoformat()}:{percent}",
                payload=details[alert],
                occurred_at=now,
            )
        return exhausted


def _booked(
    rows: list[repository.ItemTuple], booking: Booking
) -> tuple[list[tuple[date, bool, date]], set[date]]:
    """Each item's (period booked in, adjustment, day of use), and the periods booked in.
    Items come in canonical order, so the items of one window start are neighbours: one
    lookup per window start."""
    booked: list[tuple[date, bool, date]] = []
    append = booked.append
    periods = set()
    last: datetime | None = None
    found: tuple[date, bool, date] | None = None
    for row in rows:
        if row[0] != last:
            last = row[0]
            found = booking.period(last)
            periods.add(found[0])
        assert found is not None
        append(found)
    return booked, periods


Daily = tuple[date, str, str, str, str, UUID | None, int, int]


class _Totals:
    """A batch's daily totals, kept as its chunks are computed."""

    def __init__(self, batch_id: int) -> None:
        self.batch_id = batch_id
        # (day, iccid, app, category, payer kind, payer as an int: cheaper to hash than a
        # UUID) -> [bytes, items, payer]
        self.daily: dict[tuple[date, str, str, str, str, int], list[Any]] = {}

    def rows(self, shares: list[Share]) -> list[repository.AllocationRow]:
        """The shares' allocation rows, added to the daily totals in the same pass."""
        rows: list[repository.AllocationRow] = []
        append = rows.append
        daily = self.daily
        batch_id = self.batch_id
        for share in shares:
            item = share.item
            kind, payer, data_bytes = share.payer_kind, share.payer_id, share.data_bytes
            append(
                (item.window_start, item.iccid, item.boot, item.seq, item.app, share.category,
                 item.period, kind, payer, share.policy_id, share.terms_from, data_bytes,
                 item.adjustment, batch_id)
            )  # fmt: skip
            assert item.day is not None
            key = (item.day, item.iccid, item.app, share.category, kind,
                   -1 if payer is None else payer.int)  # fmt: skip
            found = daily.get(key)
            if found is None:
                daily[key] = [data_bytes, 1, payer]
            else:
                found[0] += data_bytes
                found[1] += 1
        return rows

    def daily_rows(self) -> list[Daily]:
        return [(*key[:5], total[2], total[0], total[1]) for key, total in self.daily.items()]


def _count(items: int, adjustments: int, daily: list[Daily]) -> None:
    metrics.BILLING_ITEMS_ALLOCATED.inc(items)
    if adjustments:
        metrics.BILLING_ADJUSTMENTS.inc(adjustments)
    per_kind: dict[str, int] = defaultdict(int)
    per_sponsor: dict[UUID, int] = defaultdict(int)
    for _, _, _, _, kind, payer, data_bytes, _ in daily:
        per_kind[kind] += data_bytes
        if kind == PayerKind.SPONSOR and payer is not None:
            per_sponsor[payer] += data_bytes
    for kind, data_bytes in per_kind.items():
        metrics.BILLING_BYTES_ALLOCATED.labels(kind).inc(data_bytes)
    for sponsor, data_bytes in per_sponsor.items():
        metrics.BILLING_SPONSOR_BYTES.labels(str(sponsor)).inc(data_bytes)


# A batch's items in canonical order, and what the rules need to know of their SIMs.
_Read = tuple[list[repository.ItemTuple], dict[str, SimView]]


async def _read(conn: Connection, from_xid: int, to_xid: int) -> _Read:
    """The items of the transactions, sorted into canonical order (the tuples start with the
    item's key), and their SIMs. The read-ahead runs this for the next batch while the current
    one is finished: the items are final, and the SIMs as they are a moment before the batch
    starts are as good as at its start."""
    rows = await repository.items(conn, from_xid=from_xid, to_xid=to_xid)
    rows.sort()
    sims = await sponsors.sim_views(conn, sorted({r[1] for r in rows}))
    return rows, sims


async def _drop(task: asyncio.Task[_Read]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
        await task


def _changed_caps(before: Spend, after: Spend) -> list[tuple[int, date, str, int]]:
    return [
        (pid, period, iccid, used)
        for (pid, period, iccid), used in after.cap_used.items()
        if used != before.cap_used.get((pid, period, iccid), 0)
    ]


def _budget_fraction(spend: Spend, policy_id: int) -> Decimal | None:
    budget = spend.budgets.get(policy_id)
    if budget is None:
        return None
    if budget.bytes_limit is not None:
        return Decimal(spend.used_bytes.get(policy_id, 0)) / budget.bytes_limit
    if budget.money_limit is not None:
        return spend.used_money.get(policy_id, Decimal(0)) / budget.money_limit
    return None
