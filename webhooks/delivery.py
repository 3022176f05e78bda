"""The sender: claims due attempts, POSTs them signed, records each in the delivery log, and
schedules retries (`flowbill webhooks`).

Workers claim attempts with FOR UPDATE SKIP LOCKED and a lease (see repository.claim_due), send
outside any transaction, and record each outcome in its own short transaction. A worker that
dies mid-send leaves its attempts to be sent again when the lease ends: delivery is
at-least-once, and receivers deduplicate on `webhook-id`.

Sending is a continuous pool (`Sender.serve`): a request that ends frees its slot at once, and
the next due attempt takes it; nobody waits for a batch's slowest request. Each endpoint and
each tenant may hold only a few of the slots, so an endpoint that hangs until the timeout
holds its own slots and no one else's. Every request goes through `webhooks.egress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from prometheus_client import start_http_server
from psycopg_pool import AsyncConnectionPool

from flowbill import db, metrics
from flowbill.db import Connection
from flowbill.settings import Settings
from webhooks import egress, repository, signing
from webhooks.egress import EgressPolicy, EgressRefused, HostNotFound
from webhooks.repository import DueAttempt

log = logging.getLogger(__name__)

# Delays before each retry of a failed attempt (the first attempt is immediate): the Standard
# Webhooks example schedule, cut after a day. flowbill.settings repeats it as the default of
# webhook_retry_schedule_seconds, which is what `run` uses (tests shorten it there).
RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_TIMEOUT_SECONDS = 15.0
# A retry comes up to this share of its delay later, so that endpoints that failed together
# are not all retried in the same second.
JITTER = 0.1
# A Retry-After header may push a retry later than the schedule, up to this.
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0
# A claimed attempt is left alone for the timeout plus this margin before another worker may
# take it over.
LEASE_MARGIN = timedelta(seconds=30)
BATCH = 100
# The purge deletes so many messages per transaction, so that it never holds locks for long.
PURGE_BATCH = 1000
EXCERPT_CHARS = 500
_READ_AT_MOST = 4096
USER_AGENT = "Flowbill-Webhooks/1.0"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST did."""

    succeeded: bool
    kind: str  # the metrics label: succeeded, http_error, timeout, network_error
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    duration_seconds: float
    retry_after_seconds: float | None = None


@dataclass(slots=True)
class Round:
    """What one call of deliver_due did."""

    attempts: int = 0
    succeeded: int = 0
    retrying: int = 0
    given_up: int = 0


def retry_delay(
    attempt_no: int,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds from the failure of attempt `attempt_no` to the next attempt; None: give up."""
    if attempt_no > len(schedule):
        return None
    spread = rng.uniform(0, JITTER) if rng is not None else random.uniform(0, JITTER)
    delay = schedule[attempt_no - 1] * (1 + spread)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


def _retry_after(response: httpx.Response) -> float | None:
    # Only the seconds form: an HTTP date would need the receiver's clock to agree with ours.
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _signing_secrets(attempt: DueAttempt, *, now: datetime) -> list[str]:
    secrets = [attempt.secret]
    until = attempt.previous_secret_until
    if attempt.previous_secret and until is not None and until > now:
        secrets.append(attempt.previous_secret)
    return secrets


async def send(
    http: httpx.AsyncClient, attempt: DueAttempt, *, now: datetime, timeout_seconds: float
) -> Outcome:
    """POST one attempt, signed; never raises for what the receiver or the network does."""
    # The signature's timestamp is the wall clock's: receivers check it against theirs.
    headers = signing.headers(
        _signing_secrets(attempt, now=now), msg_id=attempt.msg_id, timestamp=int(time.time()),
        body=attempt.body,
    )  # fmt: skip
    headers["content-type"] = "application/json"
    headers["user-agent"] = USER_AGENT
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(timeout_seconds),
            http.stream("POST", attempt.url, content=attempt.body.encode(), headers=headers) as r,
        ):
            head = b""
            async for chunk in r.aiter_bytes():
                head += chunk
                if len(head) >= _READ_AT_MOST:
                    break
    except EgressRefused as refused:
        # Refused before any connection was opened: there is nothing read back to keep.
        return Outcome(
            succeeded=False, kind="refused", status_code=None, response_excerpt=None,
            error=f"refused: {refused}"[:EXCERPT_CHARS],
            duration_seconds=time.perf_counter() - started,
        )  # fmt: skip
    except HostNotFound as missing:
        return Outcome(
            succeeded=False, kind="network_error", status_code=None, response_excerpt=None,
            error=str(missing)[:EXCERPT_CHARS], duration_seconds=time.perf_counter() - started,
        )  # fmt: skip
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(
            succeeded=False, kind="timeout", status_code=None, response_excerpt=None,
            error=f"no response within {timeout_seconds:g} s",
            duration_seconds=time.perf_counter() - started,
        )  # fmt: skip
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Outcome(
            succeeded=False, kind="network_error", status_code=None, response_excerpt=None,
            error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS],
            duration_seconds=time.perf_counter() - started,
        )  # fmt: skip
    except Exception as exc:
        # Whatever else breaks one request must not take the rest of the batch down with it.
        log.exception("webhook request failed unexpectedly", extra={"msg_id": attempt.msg_id})
        return Outcome(
            succeeded=False, kind="network_error", status_code=None, response_excerpt=None,
            error=f"could not send: {type(exc).__name__}",
            duration_seconds=time.perf_counter() - started,
        )  # fmt: skip
    duration = time.perf_counter() - started
    excerpt = head.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    ok = 200 <= r.status_code < 300
    return Outcome(
        succeeded=ok,
        kind="succeeded" if ok else "http_error",
        status_code=r.status_code,
        response_excerpt=excerpt,
        error=None if ok else f"HTTP {r.status_code} is not a 2xx answer",
        duration_seconds=duration,
        retry_after_seconds=None if ok else _retry_after(r),
    )


async def _record(
    conn: Connection,
    attempt: DueAttempt,
    outcome: Outcome,
    *,
    now: datetime,
    sent_at: datetime,
    schedule: Sequence[float],
) -> str | None:
    """Record the outcome and schedule what follows; the chain's state after it, or None if
    the attempt was no longer ours to record."""
    recorded = await repository.record_attempt(
        conn, attempt_id=attempt.attempt_id, succeeded=outcome.succeeded, sent_at=sent_at,
        duration_ms=round(outcome.duration_seconds * 1000), status_code=outcome.status_code,
        response_excerpt=outcome.response_excerpt, error=outcome.error,
    )  # fmt: skip
    if not recorded:
        return None
    if outcome.succeeded:
        return "succeeded"
    delay = retry_delay(attempt.attempt_no, schedule, retry_after=outcome.retry_after_seconds)
    if delay is None:
        return "failed"
    await repository.schedule(
        conn, message_id=attempt.message_id, endpoint_id=attempt.endpoint_id,
        attempt_no=attempt.attempt_no + 1, trigger=attempt.trigger,
        due_at=now + timedelta(seconds=delay),
    )  # fmt: skip
    return "retrying"


async def _deliver_one(
    pool: AsyncConnectionPool[Connection],
    http: httpx.AsyncClient,
    attempt: DueAttempt,
    *,
    now: datetime,
    timeout_seconds: float,
    schedule: Sequence[float],
    tally: Round,
) -> None:
    sent_at = datetime.now(UTC)
    outcome = await send(http, attempt, now=now, timeout_seconds=timeout_seconds)
    metrics.WEBHOOK_ATTEMPTS.labels(outcome.kind).inc()
    metrics.WEBHOOK_ATTEMPT_SECONDS.observe(outcome.duration_seconds)
    context = {
        "endpoint_id": str(attempt.endpoint_id),
        "msg_id": attempt.msg_id,
        "attempt_no": attempt.attempt_no,
        "outcome": outcome.kind,
        "status_code": outcome.status_code,
    }
    try:
        async with db.transaction(pool) as conn:
            state = await _record(
                conn, attempt, outcome, now=now, sent_at=sent_at, schedule=schedule
            )
    except Exception:
        # The lease runs out and the attempt is sent again: at-least-once.
        log.exception("webhook attempt not recorded", extra=context)
        return
    if state == "succeeded":
        tally.succeeded += 1
        metrics.WEBHOOK_DELIVERIES.labels("succeeded").inc()
    elif state == "retrying":
        tally.retrying += 1
        log.info("webhook attempt failed; will retry", extra=context)
    elif state == "failed":
        tally.given_up += 1
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        log.warning("webhook delivery given up after its last retry", extra=context)


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests one sender has in flight: in all, and at most for one endpoint, one tenant
    (None: no limit of that kind)."""

    total: int
    per_endpoint: int | None = None
    per_tenant: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            total=settings.webhook_concurrency,
            per_endpoint=settings.webhook_endpoint_concurrency,
            per_tenant=settings.webhook_tenant_concurrency,
        )


class Sender:
    """Sends due attempts within its limits, and knows what it has in flight."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        http: httpx.AsyncClient,
        *,
        limits: Limits,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        schedule: Sequence[float] = RETRY_SCHEDULE_SECONDS,
    ) -> None:
        self._pool = pool
        self._http = http
        self.limits = limits
        self._timeout = timeout_seconds
        self._schedule = tuple(schedule)
        self._by_endpoint: Counter[UUID] = Counter()
        self._by_tenant: Counter[UUID] = Counter()
        self._in_flight = 0
        self._slot_freed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def claim(self, *, now: datetime, limit: int) -> list[DueAttempt]:
        """Lease up to `limit` due attempts that fit the limits beside what is in flight."""
        lease_until = now + timedelta(seconds=self._timeout) + LEASE_MARGIN
        async with db.transaction(self._pool) as conn:
            return await repository.claim_due(
                conn, now=now, lease_until=lease_until, limit=limit,
                per_endpoint=self.limits.per_endpoint, per_tenant=self.limits.per_tenant,
                busy_endpoints=+self._by_endpoint, busy_tenants=+self._by_tenant,
            )  # fmt: skip

    async def _send(self, attempt: DueAttempt, *, now: datetime, tally: Round) -> None:
        try:
            await _deliver_one(
                self._pool, self._http, attempt, now=now, timeout_seconds=self._timeout,
                schedule=self._schedule, tally=tally,
            )  # fmt: skip
        finally:
            self._by_endpoint[attempt.endpoint_id] -= 1
            self._by_tenant[attempt.tenant_id] -= 1
            self._in_flight -= 1
            metrics.WEBHOOK_IN_FLIGHT.set(self._in_flight)
            self._slot_freed.set()

    def _start(
        self, group: asyncio.TaskGroup, attempt: DueAttempt, *, now: datetime, tally: Round
    ) -> None:
        self._by_endpoint[attempt.endpoint_id] += 1
        self._by_tenant[attempt.tenant_id] += 1
        self._in_flight += 1
        metrics.WEBHOOK_IN_FLIGHT.set(self._in_flight)
        group.create_task(
            self._send(attempt, now=now, tally=tally), name=f"webhook-attempt-{attempt.attempt_id}"
        )

    async def round(self, *, now: datetime, limit: int | None = None) -> Round:
        """Claim what is due at `now` (up to `limit`, within the limits), send it side by side,
        and return when every request has ended."""
        claimed = await self.claim(now=now, limit=min(limit or self.limits.total, self._free))
        tally = Round(attempts=len(claimed))
        async with asyncio.TaskGroup() as group:
            for attempt in claimed:
                self._start(group, attempt, now=now, tally=tally)
        return tally

    @property
    def _free(self) -> int:
        return max(self.limits.total - self._in_flight, 0)

    async def serve(self, stop: asyncio.Event, *, interval_seconds: float) -> None:
        """Keep the slots busy until `stop`: claim whenever a slot frees, or every
        `interval_seconds` for what fell due since; then let the requests under way end."""
        tally = Round()
        async with asyncio.TaskGroup() as group:
            while not stop.is_set():
                self._slot_freed.clear()
                if self._free:
                    now = datetime.now(UTC)
                    try:
                        claimed = await self.claim(now=now, limit=self._free)
                    except Exception:
                        log.exception("webhook claim failed")
                        claimed = []
                    for attempt in claimed:
                        self._start(group, attempt, now=now, tally=tally)
                    tally.attempts += len(claimed)
                # Either every slot is taken, or nothing more is due within the limits: what
                # changes that is a request ending, or time passing.
                await _first_of(stop.wait(), self._slot_freed.wait(), seconds=interval_seconds)
        log.info(
            "webhook sender drained",
            extra={"attempts": tally.attempts, "succeeded": tally.succeeded,
                   "retrying": tally.retrying, "given_up": tally.given_up},
        )  # fmt: skip


async def _first_of(*waits: Coroutine[Any, Any, object], seconds: float) -> None:
    """Wait until the first of `waits` is done, or `seconds`; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def deliver_round(
    pool: AsyncConnectionPool[Connection],
    http: httpx.AsyncClient,
    *,
    now: datetime,
    limit: int,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    schedule: Sequence[float] = RETRY_SCHEDULE_SECONDS,
    limits: Limits | None = None,
) -> Round:
    """Claim up to `limit` attempts due at `now`, send them side by side, record each."""
    sender = Sender(
        pool, http, limits=limits or Limits(total=limit), timeout_seconds=timeout_seconds,
        schedule=schedule,
    )  # fmt: skip
    return await sender.round(now=now, limit=limit)


async def deliver_due(
    pool: AsyncConnectionPool[Connection],
    http: httpx.AsyncClient,
    *,
    now: datetime,
    limit: int,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    schedule: Sequence[float] = RETRY_SCHEDULE_SECONDS,
    limits: Limits | None = None,
) -> int:
    """Send up to `limit` attempts due at `now`; returns how many were sent.

    `now` decides what is due and when retries fall due; the signature's timestamp is always
    the wall clock's.
    """
    done = await deliver_round(
        pool, http, now=now, limit=limit, timeout_seconds=timeout_seconds, schedule=schedule,
        limits=limits,
    )  # fmt: skip
    return done.attempts


async def observe_queue(pool: AsyncConnectionPool[Connection], *, now: datetime) -> None:
    """Set the queue depth gauges."""
    async with db.transaction(pool) as conn:
        due, scheduled = await repository.queue_depth(conn, now=now)
    metrics.WEBHOOK_QUEUE_DEPTH.labels("due").set(due)
    metrics.WEBHOOK_QUEUE_DEPTH.labels("scheduled").set(scheduled)


async def purge(
    pool: AsyncConnectionPool[Connection], *, created_before: datetime, batch: int = PURGE_BATCH
) -> tuple[int, int]:
    """Delete the messages created before `created_before` whose deliveries are all over
    (none pending), with their delivery log, a batch per transaction; (messages, attempts)."""
    messages = attempts = 0
    while True:
        async with db.transaction(pool) as conn:
            gone, logged = await repository.purge_finished(
                conn, created_before=created_before, limit=batch
            )
        messages, attempts = messages + gone, attempts + logged
        metrics.WEBHOOK_PURGED.labels("messages").inc(gone)
        metrics.WEBHOOK_PURGED.labels("attempts").inc(logged)
        if gone < batch:
            return messages, attempts


def client(settings: Settings, *, policy: EgressPolicy | None = None) -> httpx.AsyncClient:
    """The sender's HTTP client, under the egress policy the settings give (or `policy`)."""
    return egress.client(
        policy or EgressPolicy.from_settings(settings),
        timeout_seconds=settings.webhook_timeout_seconds,
        max_connections=settings.webhook_concurrency,
    )


async def _housekeeping(
    pool: AsyncConnectionPool[Connection], settings: Settings, stop: asyncio.Event
) -> None:
    """Queue gauges every interval; the retention purge every purge interval."""
    retention = timedelta(days=settings.webhook_retention_days)
    next_purge = 0.0
    while not stop.is_set():
        now = datetime.now(UTC)
        try:
            await observe_queue(pool, now=now)
            if time.monotonic() >= next_purge:
                messages, attempts = await purge(pool, created_before=now - retention)
                next_purge = time.monotonic() + settings.webhook_purge_interval_seconds
                if messages:
                    log.info(
                        "webhook logs purged", extra={"messages": messages, "attempts": attempts}
                    )
        except Exception:
            log.exception("webhook housekeeping failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.webhook_interval_seconds)


async def run(
    settings: Settings,
    *,
    once: bool,
    metrics_port: int | None = None,
    policy: EgressPolicy | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Deliver webhooks until SIGTERM or SIGINT (or `stop`); with `once`, send what is due now,
    purge what retention says, and return."""
    stop = stop or asyncio.Event()
    if not once:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.api_host)
    schedule = tuple(settings.webhook_retry_schedule_seconds)
    if any(not 0 <= delay <= MAX_RETRY_AFTER_SECONDS * 7 for delay in schedule):
        raise ValueError("FLOWBILL_WEBHOOK_RETRY_SCHEDULE_SECONDS: each delay is 0 s to 7 days")
    limits = Limits.from_settings(settings)
    pool = db.create_pool(settings, name="flowbill-webhooks")
    await pool.open(wait=True)
    log.info(
        "webhook sender started",
        extra={
            "retries": len(schedule), "timeout_seconds": settings.webhook_timeout_seconds,
            "concurrency": limits.total, "endpoint_concurrency": limits.per_endpoint,
            "tenant_concurrency": limits.per_tenant,
        },
    )  # fmt: skip
    try:
        async with client(settings, policy=policy) as http:
            sender = Sender(
                pool, http, limits=limits, timeout_seconds=settings.webhook_timeout_seconds,
                schedule=schedule,
            )  # fmt: skip
            if once:
                while (await sender.round(now=datetime.now(UTC))).attempts:
                    pass
                now = datetime.now(UTC)
                await purge(
                    pool, created_before=now - timedelta(days=settings.webhook_retention_days)
                )
                await observe_queue(pool, now=now)
            else:
                async with asyncio.TaskGroup() as group:
                    group.create_task(
                        _housekeeping(pool, settings, stop), name="webhook-housekeeping"
                    )
                    group.create_task(
                        sender.serve(stop, interval_seconds=settings.webhook_interval_seconds),
                        name="webhook-sender",
                    )
    finally:
        await pool.close()
    log.info("webhook sender stopped")
