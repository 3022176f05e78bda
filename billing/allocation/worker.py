"""`flowbill bill`: allocate stored usage continuously (or until none is left), and keep each
SIM's retained coverage message up to date."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiomqtt
import psycopg
from prometheus_client import start_http_server

from billing.allocation import coverage, repository
from billing.allocation.batches import AllocationRun, BatchOutcome
from flowbill import db, metrics
from flowbill.db import Connection
from flowbill.settings import Settings
from ingest import mqtt_session
from iot_cards.service import cards as iot_cards
from sponsors import ownership
from sponsors import service as sponsors
from wallet.errors import InsufficientBalance

log = logging.getLogger(__name__)

# How often the loop looks for wallets that changed outside billing, and recomputes every
# SIM's coverage (time alone changes it: a month starts, a policy's validity ends).
WALLET_CHECK_SECONDS = 5.0
FULL_REFRESH_SECONDS = 300.0
# How often the daily totals appended by batches are merged (the last few days: late usage).
COMPACT_SECONDS = 600.0
COMPACT_DAYS = 3
_COVERAGE_CHUNK = 2000


class CoveragePublisher:
    """One MQTT connection for coverage messages, reconnected on demand."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None

    async def publish(self, topic: str, payload: bytes) -> None:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            client = mqtt_session.broker_client(
                self._settings, identifier=f"flowbill-billing-{socket.gethostname()}"
            )
            await stack.enter_async_context(client)
            self._stack, self._client = stack, client
        try:
            await self._client.publish(topic, payload, qos=1, retain=True)
        except aiomqtt.MqttError:
            await self.close()
            raise

    async def close(self) -> None:
        if self._stack is not None:
            with contextlib.suppress(Exception):
                await self._stack.aclose()
        self._stack, self._client = None, None


class Biller:
    """The loop's state: the run, the SIMs whose coverage must be recomputed, the clocks."""

    def __init__(
        self,
        settings: Settings,
        conn: Connection,
        publisher: CoveragePublisher,
        *,
        reader: Connection | None = None,
    ) -> None:
        self.settings = settings
        self.conn = conn
        self.publisher = publisher
        self.run = AllocationRun(settings, reader=reader)
        self.dirty: set[str] = set()
        self.terms_seen: datetime | None = None
        self.cards_seen = datetime(2000, 1, 1, tzinfo=UTC)
        self.vehicles_seen = datetime(2000, 1, 1, tzinfo=UTC)
        self.last_wallet_check = 0.0
        self.last_full_refresh = 0.0
        self.last_compaction = time.monotonic()

    async def compact(self, *, force: bool = False) -> int:
        """Merge the recent daily totals, at most every COMPACT_SECONDS (or when forced)."""
        clock = time.monotonic()
        if not force and clock - self.last_compaction < COMPACT_SECONDS:
            return 0
        self.last_compaction = clock
        async with self.conn.transaction():
            if not await repository.try_run_lock(self.conn):
                return 0
            since = self.run.calendar.day_of(datetime.now(UTC)) - timedelta(days=COMPACT_DAYS)
            merged = await repository.compact_daily(self.conn, since=since)
        log.info("daily totals compacted", extra={"rows_merged_away": merged})
        return merged

    async def apply_owner_changes(self) -> None:
        """Owner changes dated earlier that took effect: their SIMs leave the vehicles of
        automakers that no longer own them, before the next batch allocates their usage."""
        async with self.conn.transaction():
            gone = await ownership.apply_due_changes(self.conn, now=datetime.now(UTC))
        if gone:
            self.dirty.update(gone)
            log.info("owner changes applied", extra={"sims_taken_out": len(gone)})

    async def batch(self) -> BatchOutcome | None:
        """One batch in its own transaction; a batch that lost a race is retried."""
        await self.apply_owner_changes()
        for attempt in range(5):
            try:
                async with self.conn.transaction():
                    outcome = await self.run.batch(self.conn, now=datetime.now(UTC))
            except (
                InsufficientBalance,
                psycopg.errors.DeadlockDetected,
                psycopg.errors.SerializationFailure,
            ) as exc:
                # Should not happen (the batch holds its drivers' wallets from its read to its
                # draw), but a lost race is never worth more than a rollback and a fresh read.
                log.warning(
                    "allocation batch retried", extra={"attempt": attempt, "error": str(exc)}
                )
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if outcome is not None:
                self.dirty |= outcome.touched_sims
                if outcome.exhausted_policies:
                    async with self.conn.transaction():
                        self.dirty.update(
                            await sponsors.sims_covered_by_policies(
                                self.conn, sorted(outcome.exhausted_policies)
                            )
                        )
            return outcome
        raise RuntimeError("an allocation batch failed five times in a row")

    async def refresh_coverage(self, *, force_all: bool = False) -> int:
        """Recompute the coverage of the SIMs that may have changed, publish what did."""
        now = datetime.now(UTC)
        clock = time.monotonic()
        async with self.conn.transaction():
            changed_terms_since = self.terms_seen
            version, _ = await sponsors.terms_version(self.conn)
            if version is not None and (self.terms_seen is None or version > self.terms_seen):
                self.dirty.update(
                    await sponsors.sims_covered_by_terms_since(self.conn, changed_terms_since)
                )
                self.terms_seen = version
            # IoT cards blocked or unblocked since the last look (a little overlap: clocks).
            self.dirty.update(
                await iot_cards.cards_changed_since(
                    self.conn, since=self.cards_seen - timedelta(seconds=5)
                )
            )
            self.cards_seen = now
            # SIMs fitted or given another owner, vehicles whose driver accepted or left.
            self.dirty.update(
                await sponsors.sims_changed_since(
                    self.conn, self.vehicles_seen - timedelta(seconds=5)
                )
            )
            self.vehicles_seen = now
            if clock - self.last_wallet_check >= WALLET_CHECK_SECONDS or force_all:
                self.dirty.update(await coverage.wallet_changes(self.conn, now=now))
                self.last_wallet_check = clock
        if force_all or clock - self.last_full_refresh >= FULL_REFRESH_SECONDS:
            await self._all_sims()
            self.last_full_refresh = clock
        todo, self.dirty = sorted(self.dirty), set()
        book, budgets = None, None
        for start in range(0, len(todo), _COVERAGE_CHUNK):
            chunk = todo[start : start + _COVERAGE_CHUNK]
            async with self.conn.transaction():
                if book is None:
                    book, budgets = await self.run.policy_book(self.conn)
                assert budgets is not None
                states = await coverage.compute(
                    self.conn,
                    chunk,
                    book=book,
                    budgets=budgets,
                    calendar=self.run.calendar,
                    now=now,
                )
                await coverage.store(self.conn, states)
        return await self.publish()

    async def publish(self) -> int:
        sent = 0
        try:
            while True:
                async with self.conn.transaction():
                    count = await coverage.publish_pending(
                        self.conn, self.publisher.publish, now=datetime.now(UTC)
                    )
                sent += count
                if count == 0:
                    return sent
        except aiomqtt.MqttError as exc:
            log.warning("coverage not published, will retry", extra={"error": str(exc)})
            return sent

    async def _all_sims(self) -> None:
        # SIMs whose coverage was sent once but that left their vehicle since: told so.
        async with self.conn.transaction():
            self.dirty.update(await repository.all_coverage_sims(self.conn))
        after: str | None = None
        while True:
            async with self.conn.transaction():
                page = await sponsors.fitted_sims(self.conn, after=after, limit=10_000)
            self.dirty.update(page)
            if len(page) < 10_000:
                return
            after = page[-1]


@contextlib.asynccontextmanager
async def biller(settings: Settings) -> AsyncIterator[Biller]:
    conn = await db.connect(settings, application_name="flowbill-billing")
    reader = await db.connect(settings, application_name="flowbill-billing-reader")
    await reader.set_autocommit(True)
    publisher = CoveragePublisher(settings)
    b = Biller(settings, conn, publisher, reader=reader)
    try:
        yield b
    finally:
        await b.run.close()
        await publisher.close()
        await reader.close()
        await conn.close()


async def run(settings: Settings, *, once: bool = False, metrics_port: int | None = None) -> int:
    """Allocate until SIGTERM/SIGINT (or, with `once`, until no final item is left); returns
    the number of items allocated. A signal lets the batch under way commit first."""
    stop = asyncio.Event()
    if not once:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.api_host)
    total = 0
    async with biller(settings) as b:
        await b.refresh_coverage(force_all=True)
        while not stop.is_set():
            outcome = await b.batch()
            if outcome is not None and outcome.items:
                total += outcome.items
                log.info(
                    "allocation batch",
                    extra={
                        "batch_id": outcome.batch_id, "items": outcome.items,
                        "allocations": outcome.allocations, "adjustments": outcome.adjustments,
                        "total_items": total, "more": outcome.more,
                    },
                )  # fmt: skip
            more = outcome is not None and outcome.more
            if not more:
                await b.compact(force=once)
                await b.refresh_coverage()
                async with b.conn.transaction():
                    backlog = await repository.unallocated_items(b.conn)
                metrics.BILLING_BACKLOG_ITEMS.set(backlog)
                if once:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.billing_interval_seconds)
            elif len(b.dirty) > 20_000:
                await b.refresh_coverage()
    log.info("allocation run stopped", extra={"total_items": total})
    return total
