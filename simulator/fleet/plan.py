"""The plan: every message the fleet sends, in publishing order.

Planning is pure and seeded (the same options and clock give the same messages): the devices'
use comes from one random stream and what goes wrong on the way from another.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, overload

from ingest.protocol import (
    AppUsage,
    Rejection,
    RejectReason,
    UsageReport,
    encode_report,
    parse_report,
)
from simulator.fleet.malformed import MALFORMATIONS, _malformed
from simulator.fleet.options import SimulationOptions
from simulator.fleet.traffic import (
    SHANGHAI,
    Fleet,
    _between,
    _boot_minute,
    _Device,
    _fleet,
    _iot_minute,
    _vehicle_minute,
)

Kind = Literal["report", "duplicate", "malformed"]

# The ingest's default clock skew (FLOWBILL_INGEST_MAX_CLOCK_SKEW_SECONDS); only the
# future-window malformation depends on it, and that one is a day ahead.
_INGEST_CLOCK_SKEW = timedelta(minutes=5)
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One MQTT message of a plan and what it is meant to be."""

    topic: str
    payload: bytes
    kind: Kind
    # The report a 'report' or 'duplicate' message carries.
    report: UsageReport | None = None
    fleet: Fleet | None = None
    # For 'malformed': what is wrong (e.g. "negative_bytes") and the ingest's reject reason.
    malformation: str | None = None
    expected_reason: RejectReason | None = None


@dataclass(frozen=True)
class FleetPlan(Sequence[PlannedMessage]):
    """The messages to publish, in order, and the span and losses behind them."""

    messages: list[PlannedMessage]
    start: datetime
    # No window ends after this.
    end: datetime
    # Reports produced but never sent (their seqs are gaps).
    lost: int = 0

    @overload
    def __getitem__(self, index: int) -> PlannedMessage: ...
    @overload
    def __getitem__(self, index: slice) -> list[PlannedMessage]: ...
    def __getitem__(self, index: int | slice) -> PlannedMessage | list[PlannedMessage]:
        return self.messages[index]

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[PlannedMessage]:
        return iter(self.messages)


def plan_fleet(options: SimulationOptions, *, now: datetime | None = None) -> FleetPlan:
    """Every message the fleet sends, in publishing order; deterministic for a seed and clock."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    step = options.report_interval_minutes
    windows = options.minutes // step
    start = options.plan_start(now)
    end = start + timedelta(minutes=windows * step)
    if end > now:
        raise ValueError(f"the plan ends at {end:%Y-%m-%d %H:%M}Z, after now: start earlier")
    # Two streams: what the devices use, and what goes wrong on the way. Faults then change
    # no report's contents, so a faulty plan is comparable with a clean one.
    traffic = random.Random(options.seed)
    faults = random.Random(f"{options.seed}:faults")
    devices = _fleet(options, traffic, start)
    order = list(devices)
    # Asia/Shanghai has kept UTC+8 without daylight saving since 1991: the local minute of
    # day is a plain offset from the start's.
    local_start = start.astimezone(SHANGHAI)
    first_local_minute = local_start.hour * 60 + local_start.minute

    messages: list[PlannedMessage] = []
    late: list[PlannedMessage] = []
    late_repeats: list[PlannedMessage] = []
    # Repeats wait until the plan holds this many messages.
    repeats: dict[int, list[PlannedMessage]] = {}
    malformed_count = 0
    lost = 0
    for window in range(windows):
        offset = window * step
        window_start = start + timedelta(minutes=offset)
        window_end = window_start + timedelta(minutes=step)
        hours = [
            (first_local_minute + offset + minute) % _MINUTES_PER_DAY // 60
            for minute in range(step)
        ]
        traffic.shuffle(order)  # devices report at different moments of each minute
        for device in order:
            if faults.random() < options.reboot_rate:
                device.boot = _boot_minute(window_start)
                device.seq = 0
            usage: dict[str, list[int]] = {}
            model = _vehicle_minute if device.fleet == "vehicle" else _iot_minute
            for hour in hours:
                model(traffic, device, hour, usage)
            report = UsageReport(
                iccid=device.iccid,
                boot=device.boot,
                seq=device.seq,
                start=window_start,
                end=window_end,
                apps=[AppUsage(app, up, down) for app, (up, down) in usage.items() if up or down],
            )
            device.seq += 1
            is_lost = faults.random() < options.loss_rate
            is_late = faults.random() < options.late_rate
            is_repeated = faults.random() < options.duplicate_rate
            is_malformed = faults.random() < options.malformed_rate
            if is_lost:
                lost += 1
            else:
                planned = PlannedMessage(
                    device.topic, encode_report(report), "report", report, device.fleet
                )
                repeat = PlannedMessage(
                    planned.topic, planned.payload, "duplicate", report, device.fleet
                )
                if is_late:
                    late.append(planned)
                    if is_repeated:
                        late_repeats.append(repeat)
                else:
                    messages.append(planned)
                    if is_repeated:  # a retry a little later, after the original
                        repeats.setdefault(len(messages) + _between(faults, 1, 200), []).append(
                            repeat
                        )
            if is_malformed:
                malformation = MALFORMATIONS[malformed_count % len(MALFORMATIONS)]
                malformed_count += 1
                messages.append(_labelled(malformation, faults, report, device, now))
            messages.extend(repeats.pop(len(messages), ()))
    for position in sorted(repeats):
        messages.extend(repeats[position])
    _reorder(messages, faults, options.reorder_rate)
    messages += late + late_repeats
    return FleetPlan(messages, start=start, end=end, lost=lost)


def _labelled(
    malformation: str, rng: random.Random, report: UsageReport, device: _Device, now: datetime
) -> PlannedMessage:
    topic, payload = _malformed(malformation, rng, report, device.topic, now)
    # The ingest's own rules name the reason, so the label cannot drift from them.
    verdict = parse_report(topic, payload, now=now, max_clock_skew=_INGEST_CLOCK_SKEW)
    if not isinstance(verdict, Rejection):
        raise RuntimeError(f"the {malformation} message passes the protocol's rules")
    return PlannedMessage(
        topic, payload, "malformed", None, device.fleet, malformation, verdict.reason
    )


def _reorder(messages: list[PlannedMessage], rng: random.Random, rate: float) -> None:
    """Swap neighbours, each message moving at most one place; a repeat stays after its original."""
    if not rate:
        return
    index = 0
    while index < len(messages) - 1:
        first, second = messages[index], messages[index + 1]
        if rng.random() < rate and not (
            second.kind == "duplicate" and second.report is first.report
        ):
            messages[index], messages[index + 1] = second, first
            index += 2
        else:
            index += 1
