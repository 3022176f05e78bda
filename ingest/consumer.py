"""The ingest worker: receives usage reports from the broker, stores them, then acknowledges.

Two tasks share one list of pending messages. The receive task appends what the broker
sends; the write task commits batches (by size, or after a short time) and only then
acknowledges them. The list is bounded by count and by bytes: when it is full the worker
stops reading the socket until a batch is committed, so a slow or stopped database slows
reading instead of growing memory, for QoS 0 messages too (the broker's `receive_maximum`
only limits unacknowledged QoS 1 ones). Lost database and broker connections are retried
with jittered, capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiomqtt
import psycopg
import stamina
from psycopg import errors as pg_errors

from flowbill import db, metrics
from flowbill.settings import Settings
from ingest import mqtt_session
from ingest.protocol import USAGE_TOPIC_FILTER, Rejection, RejectReason
from ingest.service import (
    BatchOutcome,
    ReceivedMessage,
    compact_rollups,
    keep_rejects,
    reject_row,
    store_batch,
)

log = logging.getLogger(__name__)

_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock timeout


# Backoff between retries: exponential from the first wait up to the cap, plus up to the
# jitter at random, so that workers do not retry in step. Attempts are not limited: the
# messages in hand are kept, unacknowledged, until the database or the broker is back.
_DATABASE_BACKOFF = {"wait_initial": 0.1, "wait_max": 5.0, "wait_jitter": 0.5}
_BROKER_BACKOFF = {"wait_initial": 0.2, "wait_max": 5.0, "wait_jitter": 1.0}


def log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """Our one record of a scheduled retry (stamina's own would add unprefixed metrics)."""
    log.info(
        "retry scheduled",
        extra={
            "cause": type(details.caused_by).__name__,
            "retry": details.retry_num,
            "wait_seconds": round(details.wait_for, 3),
        },
    )


class _DatabaseUnavailable(Exception):
    """The connection was lost in the middle of a batch; the batch is kept and retried."""


@dataclass(slots=True)
class _Pending:
    generation: int
    mid: int
    qos: int
    message: ReceivedMessage
    size: int


class IngestWorker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._batch_size = settings.ingest_batch_messages
        self._skew = timedelta(seconds=settings.ingest_max_clock_skew_seconds)
        self._pending: list[_Pending] = []
        # Held: pending, plus the batch the write task has in hand until it is committed.
        self._held_messages = 0
        self._held_bytes = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        # Set while the pending list is below both of its bounds.
        self._room = asyncio.Event()
        self._room.set()
        self._gate: mqtt_session.ReadGate | None = None
        self._closing = False
        # Held while a batch is written and acknowledged: shutdown waits for it.
        self._write_lock = asyncio.Lock()
        self._client: aiomqtt.Client | None = None
        self._generation = 0
        self._conn: db.Connection | None = None
        self.broker_connected = False
        self.database_ok = False
        self.received = 0
        self.acknowledged = 0

    @property
    def topic(self) -> str:
        group = self._settings.ingest_share_group
        return f"$share/{group}/{USAGE_TOPIC_FILTER}" if group else USAGE_TOPIC_FILTER

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then commit and acknowledge what was received."""
        try:
            await self._connection()
            self.database_ok = True
        except psycopg.OperationalError as exc:
            log.warning("database unavailable at start", extra={"error": str(exc)})
        writer = asyncio.create_task(self._write_loop(), name="ingest-write")
        compactor = asyncio.create_task(self._compaction_loop(stop), name="ingest-compaction")
        consumer = asyncio.create_task(self._consume(stop, writer), name="ingest-consume")
        stopper = asyncio.create_task(stop.wait(), name="ingest-stop")
        try:
            await asyncio.wait({consumer, stopper, writer}, return_when=asyncio.FIRST_COMPLETED)
            if not consumer.done() and (writer.done() or not self.broker_connected):
                # Waiting to reconnect, or for room: nothing of this connection to drain.
                # (Connected, the consumer drains on `stop` and stops if the writer died.)
                consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            if writer.done():
                # A write task that died would leave messages unacknowledged forever:
                # stop the worker loudly so that its supervisor restarts it.
                writer.result()
                raise RuntimeError("the ingest write task stopped")
        finally:
            stopper.cancel()
            consumer.cancel()
            compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await compactor
            self._closing = True
            self._wake.set()
            self._full.set()
            await writer
            if self._conn is not None:
                await self._conn.close()

    async def _compaction_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.ingest_compaction_interval_seconds
        if not interval:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            try:
                # A connection of its own: compaction must not hold up the batches.
                conn = await db.connect(self._settings, application_name="flowbill-compaction")
                try:
                    async with conn.transaction():
                        merged = await compact_rollups(
                            conn, now=datetime.now(UTC), lookback=timedelta(days=2)
                        )
                finally:
                    await conn.close()
                if merged:
                    log.info("rollups compacted", extra={"rows_merged": merged})
            except psycopg.Error as exc:
                log.warning("rollup compaction failed", extra={"error": str(exc)})

    async def _consume(self, stop: asyncio.Event, writer: asyncio.Task[None]) -> None:
        # A connection that was up and then lost starts a new round of backoff.
        while not stop.is_set():
            async for attempt in stamina.retry_context(
                on=aiomqtt.MqttError, attempts=None, timeout=None, **_BROKER_BACKOFF
            ):
                with attempt:
                    # Connect only with room to read: the broker keeps the rest meanwhile.
                    await self._room.wait()
                    await self._consume_one_connection(stop, writer)

    async def _consume_one_connection(
        self, stop: asyncio.Event, writer: asyncio.Task[None]
    ) -> None:
        client = mqtt_session.broker_client(
            self._settings,
            identifier=self._settings.ingest_worker_id,
            persistent=True,
            manual_ack=True,
            receive_maximum=self._settings.ingest_receive_maximum,
        )
        async with client:
            self._generation += 1
            self._client = client
            self._gate = mqtt_session.ReadGate(client)
            await client.subscribe(self.topic, qos=1)
            self._set_broker(connected=True)
            log.info("consuming", extra={"topic": self.topic, "client_id": client.identifier})
            receiver = asyncio.create_task(self._receive(client, self._generation))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                {receiver, stopper, writer}, return_when=asyncio.FIRST_COMPLETED
            )
            if writer in done:
                # A write task that died would leave messages unacknowledged forever:
                # stop the worker loudly so that its supervisor restarts it.
                receiver.cancel()
                stopper.cancel()
                writer.result()
                raise RuntimeError("the ingest write task stopped")
            if receiver in done:
                stopper.cancel()
                try:
                    receiver.result()
                except aiomqtt.MqttError as exc:
                    # Was up, now lost: reconnect at once (then with backoff).
                    self._set_broker(connected=False)
                    metrics.INGEST_BROKER_RECONNECTS.inc()
                    log.warning("broker connection lost", extra={"error": str(exc)})
                return
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await receiver
            # Commit and acknowledge what we hold while the connection is still up.
            await self._drain()
            log.info(
                "drained before disconnecting",
                extra={
                    "received": self.received,
                    "acknowledged": self.acknowledged,
                    "queued_in_client": len(client.messages),
                },
            )
        self._set_broker(connected=False)

    async def _receive(self, client: aiomqtt.Client, generation: int) -> None:
        batch_size = self._batch_size
        pending = self._pending
        async for burst in mqtt_session.receive_bursts(client):
            received_at = datetime.now(UTC)
            was_empty = not pending
            size = 0
            for message in burst:
                topic = message.topic.value
                payload = message.payload
                # aiomqtt hands over bytes for every message received from the network.
                assert isinstance(payload, bytes)
                message_size = len(payload) + len(topic)
                size += message_size
                pending.append(
                    _Pending(
                        generation,
                        message.mid,
                        message.qos,
                        ReceivedMessage(topic, payload, received_at),
                        message_size,
                    )
                )
            self._held_messages += len(burst)
            self._held_bytes += size
            self.received += len(burst)
            metrics.INGEST_MESSAGES_RECEIVED.inc(len(burst))
            self._count_pending()
            if was_empty:
                self._wake.set()
            if len(pending) >= batch_size:
                self._full.set()
            if self._is_full():
                self._room.clear()
                if self._gate is not None and not self._gate.closed:
                    self._gate.close()
                    metrics.INGEST_READ_PAUSES.inc()

    def _is_full(self) -> bool:
        return (
            self._held_messages >= self._settings.ingest_queue_messages
            or self._held_bytes >= self._settings.ingest_queue_bytes
        )

    def _count_pending(self) -> None:
        metrics.INGEST_PENDING_MESSAGES.set(self._held_messages)
        metrics.INGEST_PENDING_BYTES.set(self._held_bytes)

    async def _drain(self) -> None:
        # Also waits for a batch the write task has in hand: its acknowledgements must be
        # sent before we disconnect, or the broker redelivers what is already stored.
        while True:
            async with self._write_lock:
                if not self._pending:
                    return
            await self._write_next_batch()

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self._batch_size and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._full.wait(), timeout=self._settings.ingest_flush_seconds
                    )
            await self._write_next_batch()

    async def _write_next_batch(self) -> None:
        async with self._write_lock:
            self._full.clear()
            batch = self._pending[: self._batch_size]
            del self._pending[: len(batch)]
            if not batch:
                return
            started = time.perf_counter()
            outcome = await self._commit_with_retry([p.message for p in batch])
            metrics.INGEST_BATCH_COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.INGEST_BATCH_MESSAGES.observe(len(batch))
            self._acknowledge(batch)
            self._release(batch)
        _record(outcome)
        self._count_pending()
        if len(self._pending) >= self._batch_size:
            self._full.set()

    def _release(self, batch: list[_Pending]) -> None:
        self._held_messages -= len(batch)
        self._held_bytes -= sum(p.size for p in batch)
        if not self._is_full():
            self._room.set()
            if self._gate is not None and self._gate.closed:
                self._gate.open()

    def _acknowledge(self, batch: list[_Pending]) -> None:
        client = self._client
        if client is None:
            return
        acknowledged = 0
        for p in batch:
            # A message from an earlier connection is redelivered by the broker on this
            # one; its stored copy makes the redelivery a counted duplicate.
            if p.generation == self._generation:
                mqtt_session.acknowledge(client, mid=p.mid, qos=p.qos)
                acknowledged += 1
        self.acknowledged += acknowledged
        metrics.INGEST_MESSAGES_ACKNOWLEDGED.inc(acknowledged)

    async def _commit_with_retry(self, messages: list[ReceivedMessage]) -> BatchOutcome:
        refused: psycopg.Error | None = None
        async for attempt in stamina.retry_context(
            on=(_DatabaseUnavailable, pg_errors.TransactionRollback, pg_errors.LockNotAvailable),
            attempts=None,
            timeout=None,
            **_DATABASE_BACKOFF,
        ):
            with attempt:
                try:
                    return await self._commit(messages)
                except psycopg.Error as exc:
                    if exc.sqlstate in _RETRY_SQLSTATES:
                        metrics.INGEST_DATABASE_RETRIES.inc()
                        raise
                    if isinstance(exc, psycopg.OperationalError):
                        if isinstance(exc, pg_errors.QueryCanceled) or not self._connection_lost(
                            exc
                        ):
                            raise
                        self.database_ok = False
                        metrics.INGEST_DATABASE_RETRIES.inc()
                        log.warning("database unavailable; batch kept", extra={"error": str(exc)})
                        await self._reset_connection()
                        raise _DatabaseUnavailable from exc
                    refused = exc
        # The database refused something validation let through: isolate it so the rest
        # of the batch is stored, and keep it as a reject.
        assert refused is not None
        log.error("batch refused by the database", extra={"sqlstate": refused.sqlstate})
        return await self._commit_split(messages, refused)

    def _connection_lost(self, exc: psycopg.OperationalError) -> bool:
        return (
            self._conn is None
            or self._conn.closed
            or exc.sqlstate is None
            or (exc.sqlstate.startswith(("08", "57P")))
        )

    async def _commit_split(
        self, messages: list[ReceivedMessage], exc: psycopg.Error
    ) -> BatchOutcome:
        if len(messages) == 1:
            return await self._commit_unstorable(messages[0], exc)
        middle = len(messages) // 2
        first = await self._commit_with_retry(messages[:middle])
        second = await self._commit_with_retry(messages[middle:])
        return _merge(first, second)

    async def _commit_unstorable(
        self, message: ReceivedMessage, exc: psycopg.Error
    ) -> BatchOutcome:
        rejection = Rejection(RejectReason.UNSTORABLE, f"database refused it ({exc.sqlstate})")
        conn = await self._connection()
        async with conn.transaction():
            kept = await keep_rejects(
                conn,
                [reject_row(message, rejection)],
                payloads_per_sim_hour=self._settings.ingest_reject_payloads_per_sim_hour,
            )
        outcome = BatchOutcome(messages=1, rejects_kept=kept)
        outcome.rejected[RejectReason.UNSTORABLE] += 1
        return outcome

    async def _commit(self, messages: list[ReceivedMessage]) -> BatchOutcome:
        conn = await self._connection()
        async with conn.transaction():
            outcome = await store_batch(
                conn,
                messages,
                max_clock_skew=self._skew,
                max_age=self._settings.ingest_max_age,
                reject_payloads_per_sim_hour=self._settings.ingest_reject_payloads_per_sim_hour,
            )
        self.database_ok = True
        return outcome

    async def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = await db.connect(
                self._settings, application_name=self._settings.ingest_worker_id
            )
        return self._conn

    async def _reset_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    def _set_broker(self, *, connected: bool) -> None:
        self.broker_connected = connected
        metrics.INGEST_BROKER_CONNECTED.set(1 if connected else 0)


def _merge(a: BatchOutcome, b: BatchOutcome) -> BatchOutcome:
    merged = BatchOutcome()
    for name in BatchOutcome.__slots__:
        if name == "rejected":
            merged.rejected = a.rejected + b.rejected
        else:
            setattr(merged, name, getattr(a, name) + getattr(b, name))
    return merged


def _record(outcome: BatchOutcome) -> None:
    metrics.INGEST_REPORTS_STORED.inc(outcome.reports_stored)
    metrics.INGEST_REPORTS_DUPLICATE.inc(outcome.duplicates)
    metrics.INGEST_REPORTS_UNPROVISIONED.inc(outcome.unprovisioned)
    metrics.INGEST_ITEMS_STORED.inc(outcome.items_stored)
    metrics.INGEST_BYTES_STORED.labels("up").inc(outcome.up_bytes)
    metrics.INGEST_BYTES_STORED.labels("down").inc(outcome.down_bytes)
    metrics.INGEST_MISSING_REPORTS_FOUND.inc(outcome.missing_found)
    metrics.INGEST_MISSING_REPORTS_RECOVERED.inc(outcome.missing_recovered)
    for reason, count in outcome.rejected.items():
        metrics.INGEST_MESSAGES_REJECTED.labels(reason.value).inc(count)
    metrics.INGEST_REJECTS_NOT_KEPT.inc(sum(outcome.rejected.values()) - outcome.rejects_kept)
