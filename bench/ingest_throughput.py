"""Ingest benchmark: Flowbill's workers against the ceilings, measured in one run.

Ceilings (same messages, same machine, same run):
  - bare receive: an aiomqtt loop that only receives the messages (no parsing, no storage);
  - raw COPY: the same per-app items written by one binary COPY into a hypertable.
Flowbill: `flowbill ingest` worker processes draining the same messages from the broker
into the database (validated, deduplicated, rolled up, acknowledged after commit), with
one worker and with two. Then a paced stream measures publish-to-commit latency.

Throughput runs drain a backlog the broker holds for each consumer's persistent session,
so the publisher's own cost is not counted against the consumer (both sides alike).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from throwaway_stack import fresh_stack, machine

from devstack import localstack
from flowbill.settings import Settings
from ingest import mqtt_session
from ingest.protocol import USAGE_TOPIC, USAGE_TOPIC_FILTER, AppUsage, UsageReport, encode_report
from ingest.protocol import iccid_check_digit as check_digit

APPS = [
    "telematics", "backend", "nav.amap", "map.update", "traffic.info", "music.qq", "fm.radio",
    "video.iqiyi", "wifi.hotspot", "ota.update",
]  # fmt: skip
REPO = Path(__file__).resolve().parent.parent
# On a busy machine a reconnecting consumer takes its backlog before the broker's SUBACK, and
# a paced publisher waits behind the consumers: aiomqtt's 10 s default is not the figure.
BUSY_TIMEOUT = 120


def iccid(n: int, block: str) -> str:
    body = f"{block}{n:012d}"
    return body + check_digit(body)


def make_messages(count: int, *, block: str, sims: int = 2000) -> list[tuple[str, bytes]]:
    """`count` reports of 10 apps each, spread over `sims` SIMs, windows in the past."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    messages = []
    for i in range(count):
        sim, seq = i % sims, i // sims
        ident = iccid(sim, block)
        window = start + timedelta(minutes=seq)
        report = UsageReport(
            iccid=ident, boot=1, seq=seq, start=window, end=window + timedelta(minutes=1),
            apps=[AppUsage(app, 1000 + i % 97, 50_000 + i % 1013) for app in APPS],
        )  # fmt: skip
        messages.append((USAGE_TOPIC.format(iccid=ident), encode_report(report)))
    return messages


# QoS 1 messages the bench's publishers keep in flight: with paho's default of 20, a paced
# stream on a busy machine queues in the publisher, waits there past its timeout, and the
# latency measured would include the publisher's own queue.
PUBLISH_WINDOW = 1000


async def publish(settings: Settings, messages: list[tuple[str, bytes]]) -> list[float]:
    """Publish at QoS 1 as fast as the broker takes them; returns each message's ack time."""
    acked = [0.0] * len(messages)
    async with mqtt_session.broker_client(settings, max_inflight=PUBLISH_WINDOW) as client:
        client.pending_calls_threshold = 1_000_000
        slots = asyncio.Semaphore(PUBLISH_WINDOW)

        async def one(index: int, topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1, timeout=BUSY_TIMEOUT)
                acked[index] = time.monotonic()
            finally:
                slots.release()

        tasks = []
        for index, (topic, payload) in enumerate(messages):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(index, topic, payload)))
        await asyncio.gather(*tasks)
    return acked


async def publish_paced(
    settings: Settings, messages: list[tuple[str, bytes]], rate: float
) -> list[float]:
    sent = [0.0] * len(messages)
    async with mqtt_session.broker_client(settings, max_inflight=PUBLISH_WINDOW) as client:
        client.pending_calls_threshold = 1_000_000
        started = time.monotonic()
        tasks = []
        for index, (topic, payload) in enumerate(messages):
            ahead = started + index / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            sent[index] = time.monotonic()
            tasks.append(
                asyncio.create_task(client.publish(topic, payload, qos=1, timeout=BUSY_TIMEOUT))
            )
        await asyncio.gather(*tasks)
    return sent


async def bare_receive(settings: Settings, messages: list[tuple[str, bytes]]) -> float:
    """Seconds an aiomqtt loop takes to receive a backlog of the messages."""
    topic = f"$share/bench-bare/{USAGE_TOPIC_FILTER}"
    client_id = "bench-bare-receiver"
    async with mqtt_session.broker_client(settings, identifier=client_id, persistent=True) as c:
        await c.subscribe(topic, qos=1, timeout=BUSY_TIMEOUT)
    await publish(settings, messages)
    received = 0
    async with mqtt_session.broker_client(settings, identifier=client_id, persistent=True) as c:
        started = time.monotonic()
        await c.subscribe(topic, qos=1, timeout=BUSY_TIMEOUT)
        async for _ in c.messages:
            received += 1
            if received == len(messages):
                break
        elapsed = time.monotonic() - started
    await mqtt_session.end_session(settings, identifier=client_id)
    return elapsed


def raw_copy(settings: Settings, messages: list[tuple[str, bytes]]) -> tuple[float, int]:
    """Seconds one binary COPY of the same items into a hypertable takes."""
    import msgspec

    decoder = msgspec.json.Decoder(UsageReport)
    reports = [decoder.decode(payload) for _, payload in messages]
    now = datetime.now(UTC)
    with psycopg.connect(settings.database_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw_items")
        conn.execute("CREATE TABLE bench_raw_items (LIKE usage_items INCLUDING ALL)")
        conn.execute(
            "SELECT create_hypertable('bench_raw_items', 'window_start',"
            " chunk_time_interval => interval '1 day', create_default_indexes => false)"
        )
        conn.execute("CREATE INDEX ON bench_raw_items (iccid, window_start DESC)")
        started = time.monotonic()
        rows = 0
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(
                "COPY bench_raw_items (window_start, window_end, iccid, boot, seq, app, up_bytes,"
                " down_bytes, received_at) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(
                ["timestamptz", "timestamptz", "text", "int4", "int8", "text", "int8", "int8",
                 "timestamptz"]
            )  # fmt: skip
            for r in reports:
                for a in r.apps:
                    copy.write_row(
                        (r.start, r.end, r.iccid, r.boot, r.seq, a.app, a.up, a.down, now)
                    )
                    rows += 1
        elapsed = time.monotonic() - started
        conn.execute("DROP TABLE bench_raw_items")
    return elapsed, rows


class Worker:
    def __init__(self, settings: Settings, n: int, logs: Path, *, phase: str) -> None:
        self.port = _free_port()
        self.settings = settings
        self.client_id = f"bench-{phase}-{n}"
        self.env = {
            **os.environ,
            "FLOWBILL_DATABASE_URL": settings.database_dsn,
            **settings.broker_environment(),
            # A share group per phase: sessions of another phase must not take a share.
            "FLOWBILL_INGEST_CLIENT_ID": f"bench-{phase}-{n}",
            "FLOWBILL_INGEST_SHARE_GROUP": f"bench-{phase}",
            "FLOWBILL_INGEST_METRICS_PORT": str(self.port),
            "FLOWBILL_LOG_LEVEL": "WARNING",
        }
        self.log = logs / f"bench-{phase}-{n}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "ingest"], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        return False

    def stored(self) -> float:
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
            for line in text.splitlines():
                if line.startswith("flowbill_ingest_reports_stored_total"):
                    return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    async def retire(self) -> None:
        """End the worker's session, so later phases' messages are not queued for it."""
        await mqtt_session.end_session(self.settings, identifier=self.client_id)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


async def flowbill_drain(
    settings: Settings, messages: list[tuple[str, bytes]], workers: int, logs: Path
) -> float:
    """Seconds `workers` ingest processes take to store a backlog of the messages."""
    procs = [Worker(settings, n, logs, phase=f"drain{workers}") for n in range(1, workers + 1)]
    for p in procs:  # create the persistent sessions and their shared subscription
        p.start()
    for p in procs:
        _wait(p.ready, 60, "an ingest worker")
    for p in procs:
        p.stop()
    await publish(settings, messages)
    for p in procs:
        p.start()
    _wait(lambda: all(p.ready() for p in procs), 60, "the ingest workers")
    started = time.monotonic()
    _wait(lambda: sum(p.stored() for p in procs) >= len(messages), 600, "the backlog to be stored")
    elapsed = time.monotonic() - started
    for p in procs:
        p.stop()
        await p.retire()
    return elapsed


async def latency(
    settings: Settings, messages: list[tuple[str, bytes]], rate: float, workers: int, logs: Path
) -> list[float]:
    """Publish-to-commit latencies of a paced stream, matched by order of arrival."""
    procs = [Worker(settings, n, logs, phase=f"paced{workers}") for n in range(1, workers + 1)]
    for p in procs:
        p.start()
    _wait(lambda: all(p.ready() for p in procs), 60, "the ingest workers")
    committed: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            total = sum(await asyncio.gather(*(asyncio.to_thread(p.stored) for p in procs)))
            committed.append((time.monotonic(), total))
            # Each scrape costs the worker some CPU: poll gently (the resolution is ~25 ms).
            await asyncio.sleep(0.025)

    watcher = asyncio.create_task(watch())
    sent = await publish_paced(settings, messages, rate)
    await asyncio.to_thread(
        _wait, lambda: sum(p.stored() for p in procs) >= len(messages), 300, "the stream"
    )
    done.set()
    await watcher
    for p in procs:
        p.stop()
        await p.retire()
    latencies = []
    index = 0
    for k, sent_at in enumerate(sorted(sent)):
        while index < len(committed) and committed[index][1] < k + 1:
            index += 1
        if index < len(committed):
            latencies.append(committed[index][0] - sent_at)
    return latencies


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Figure:
    name: str
    seconds: float
    items: int

    @property
    def rate(self) -> float:
        return self.items / self.seconds


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--reports", type=int, default=60_000, help="reports per run (10 apps each)"
    )
    parser.add_argument("--latency-rate", type=float, default=4000, help="reports/s when pacing")
    parser.add_argument("--latency-seconds", type=float, default=10)
    args = parser.parse_args()

    # A throwaway stack of its own: no other broker session or data can skew the figures.
    state = REPO / ".state" / "bench"
    settings = fresh_stack(state)
    logs = state

    print(machine())
    print(f"workload: {args.reports:,} reports x 10 apps = {args.reports * 10:,} items per run\n")

    n = args.reports
    items = n * 10
    figures: list[Figure] = []
    bare = await bare_receive(settings, make_messages(n, block="8986100"))
    figures.append(Figure("ceiling: bare aiomqtt receive loop", bare, items))
    print(f"  measured {figures[-1].name}")
    copy_seconds, rows = raw_copy(settings, make_messages(n, block="8986101"))
    figures.append(Figure("ceiling: raw binary COPY into a hypertable", copy_seconds, rows))
    print(f"  measured {figures[-1].name}")
    for workers, block in ((1, "8986102"), (2, "8986103")):
        seconds = await flowbill_drain(settings, make_messages(n, block=block), workers, logs)
        figures.append(
            Figure(f"flowbill ingest, {workers} worker{'s' * (workers > 1)}", seconds, items)
        )
        print(f"  measured {figures[-1].name}")

    stream = make_messages(int(args.latency_rate * args.latency_seconds), block="8986104")
    lat1 = await latency(settings, stream, args.latency_rate, 1, logs)
    stream = make_messages(int(args.latency_rate * args.latency_seconds), block="8986105")
    lat2 = await latency(settings, stream, args.latency_rate, 2, logs)

    print()
    print(f"{'run':<46} {'seconds':>8} {'items/s':>12}")
    for f in figures:
        print(f"{f.name:<46} {f.seconds:>8.2f} {f.rate:>12,.0f}")
    bare_rate, copy_rate = figures[0].rate, figures[1].rate
    print()
    for f in figures[2:]:
        print(
            f"{f.name}: {f.rate:,.0f} items/s = {f.rate / bare_rate:.2f} x bare receive, "
            f"{f.rate / copy_rate:.2f} x raw COPY"
        )
    print()
    for workers, lat in ((1, lat1), (2, lat2)):
        print(
            f"latency at {args.latency_rate:,.0f} reports/s "
            f"({args.latency_rate * 10:,.0f} items/s), {workers} worker{'s' * (workers > 1)}: "
            f"p50 {1000 * statistics.median(lat):.0f} ms, "
            f"p99 {1000 * pct(lat, 0.99):.0f} ms (publish ack to commit, order-matched)"
        )
    best = max(f.rate for f in figures[2:])
    print()
    ratio = best / bare_rate
    print(f"target >= 100,000 items/s end to end: {_verdict(best >= 100_000)} ({best:,.0f})")
    print(f"target >= 0.6 x bare receive: {_verdict(ratio >= 0.6)} ({ratio:.2f})")
    localstack.down(state)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
