"""Publishing a plan over MQTT: a small loop over one client that keeps the plan's order and a
bounded number of messages in flight, with a progress line and a watchdog for a broker that
stops acknowledging."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Mapping, Sequence

import aiomqtt

from simulator.fleet.identities import (
    DeviceIdentity,
    DeviceListeners,
    device_client,
    removed_afterwards,
    sendable,
    topic_iccid,
)
from simulator.fleet.options import SimulationOptions
from simulator.fleet.plan import PlannedMessage, plan_fleet
from simulator.fleet.summary import SimulationSummary, summarize


class _Progress:
    """One updating line on a terminal; elsewhere a line per 10 %, so CI logs stay short."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self.tty = sys.stderr.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._next_draw = 0.0
        self._next_tenth = 1
        self._drawn = False

    def advance(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.tty:
            now = time.monotonic()
            if now >= self._next_draw or self.done == self.total:
                self._next_draw = now + 0.1
                bar = "#" * (30 * self.done // self.total)
                # \r and erase-to-end-of-line: one line, redrawn in place.
                line = f"\r[{bar:<30}] {self._status(now)}\x1b[K"
                print(line, end="", file=sys.stderr, flush=True)
                self._drawn = True
        elif self.done * 10 >= self._next_tenth * self.total:
            while self.done * 10 >= self._next_tenth * self.total:
                self._next_tenth += 1
            print(self._status(time.monotonic()), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._drawn:
            print(file=sys.stderr, flush=True)
            self._drawn = False

    def _status(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0.0
        return (
            f"published {self.done:,}/{self.total:,} ({100 * self.done / self.total:5.1f} %) "
            f"{rate:,.0f} msg/s, ETA {eta:,.0f} s"
        )


# Unacknowledged publishes; measured on 2 cores against a local Mosquitto, 50-100 is fastest
# (~20k msg/s): aiomqtt walks all pending calls on every publish, so more only costs.
DEFAULT_IN_FLIGHT = 100


async def publish_plan(
    messages: Sequence[PlannedMessage],
    *,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    rate: float = 0.0,
    qos: int = 1,
    in_flight: int = DEFAULT_IN_FLIGHT,
    progress: bool = True,
    stall_seconds: float = 30.0,
    devices: tuple[DeviceListeners, Mapping[str, DeviceIdentity]] | None = None,
) -> float:
    """Publish every message in order (QoS 1, each acknowledged); returns the seconds it took.

    With `devices`, each message goes out on the connection of the device whose topic it
    names, over TLS with that device's identity (every topic must name one: see
    `identities.sendable`); otherwise all go out on one connection with `username` and
    `password`."""
    bar = _Progress(len(messages), enabled=progress)
    pending = iter(enumerate(messages))
    outstanding = 0
    last_progress = time.monotonic()
    publishers_left = max(1, min(in_flight, len(messages)))
    all_sent = asyncio.Event()
    async with contextlib.AsyncExitStack() as connections:
        clients: dict[str, aiomqtt.Client] = {}
        if devices is None:
            client = aiomqtt.Client(
                host,
                port,
                username=username,
                password=password,
                protocol=aiomqtt.ProtocolVersion.V5,
                max_inflight_messages=in_flight,
                max_queued_outgoing_messages=0,  # unbounded: in_flight already bounds it
            )
            await connections.enter_async_context(client)
        else:
            listeners, identities = devices
            strays = {m.topic for m in messages if topic_iccid(m.topic) not in identities}
            if strays:
                raise ValueError(f"no device may publish to {sorted(strays)[:3]}")
            connections.enter_context(removed_afterwards(listeners.folder))
            for iccid, identity in identities.items():
                clients[iccid] = device_client(listeners, identity, in_flight=in_flight)
            # Connected a batch at a time: a TLS handshake each.
            pairs = list(clients.values())
            for first in range(0, len(pairs), 50):
                batch = pairs[first : first + 50]
                await asyncio.gather(*(connections.enter_async_context(c) for c in batch))
            client = pairs[0]
        for each in (client, *clients.values()):
            # aiomqtt warns on every publish once more than 10 are pending; ours are bounded.
            each.pending_calls_threshold = in_flight
        started = last_progress = bar.started = time.monotonic()

        async def publisher() -> None:
            # Publishers take messages in plan order and hand each to the client before they
            # first await, so the wire order is the plan's.
            nonlocal outstanding, last_progress, publishers_left
            for index, message in pending:
                if rate > 0:
                    ahead = started + index / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if outstanding == 0:
                    last_progress = time.monotonic()
                outstanding += 1
                # No per-publish timeout: asyncio.wait_for costs a task per message; the
                # watchdog below catches a broker that stops acknowledging.
                sender = clients[topic_iccid(message.topic)] if clients else client
                await sender.publish(message.topic, message.payload, qos=qos, timeout=math.inf)
                if qos == 0:
                    await asyncio.sleep(0)  # let the client write to the socket
                outstanding -= 1
                last_progress = time.monotonic()
                bar.advance()
            publishers_left -= 1
            if publishers_left == 0:
                all_sent.set()

        async def watchdog() -> None:
            while not all_sent.is_set():
                try:
                    async with asyncio.timeout(1.0):
                        await all_sent.wait()
                except TimeoutError:
                    if outstanding and time.monotonic() - last_progress > stall_seconds:
                        raise aiomqtt.MqttError(
                            f"the broker acknowledged nothing for {stall_seconds:.0f} s "
                            f"({bar.done:,} of {len(messages):,} messages published)"
                        ) from None

        try:
            async with asyncio.TaskGroup() as tasks:
                for number in range(publishers_left):
                    tasks.create_task(publisher(), name=f"simulator-publisher-{number}")
                tasks.create_task(watchdog(), name="simulator-publish-watchdog")
        except ExceptionGroup as group:
            # One publisher failing (a lost connection) cancels the rest: raise its error.
            raise group.exceptions[0] from None
        finally:
            bar.close()
        return time.monotonic() - started


async def simulate(
    options: SimulationOptions,
    *,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    progress: bool = True,
    devices: tuple[DeviceListeners, Mapping[str, DeviceIdentity]] | None = None,
) -> SimulationSummary:
    """Plan the fleet, publish it, and say what was sent."""
    plan: Sequence[PlannedMessage] = plan_fleet(options)
    if devices is not None:
        plan, _ = sendable(plan, devices[1])
    elapsed = await publish_plan(
        plan,
        host=host,
        port=port,
        username=username,
        password=password,
        rate=options.rate,
        progress=progress,
        devices=devices,
    )
    summary = summarize(plan)
    summary.elapsed_seconds = elapsed
    return summary
