"""`flowbill simulate`: a fleet of vehicles and IoT SIMs reporting per-app usage over MQTT.

Planning is pure and seeded (the same options and clock give the same messages); publishing
is a small loop over one MQTT client. Traffic follows the day in Asia/Shanghai: vehicles take
trips, mostly in the commutes at 7-9 and 17-19, with navigation, music or radio and passengers'
video and Wi-Fi while they drive; map and OTA updates are rare downloads of tens of MB; IoT SIMs
send small sensor readings all day.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload
from zoneinfo import ZoneInfo

import aiomqtt
import msgspec

from flowbill.units import KB, MB
from ingest.protocol import (
    MAX_PAYLOAD_BYTES,
    USAGE_TOPIC,
    AppUsage,
    Rejection,
    RejectReason,
    UsageReport,
    encode_report,
    iccid_check_digit,
    parse_report,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")

Fleet = Literal["vehicle", "iot"]
Kind = Literal["report", "duplicate", "malformed"]

# ICCID issuer blocks: 89 (telecom) 86 (China), then an operator and issuer block of ours.
# Vehicles and IoT SIMs come from different blocks, so an ICCID tells which fleet it is in.
VEHICLE_ISSUER = "8986011"
IOT_ISSUER = "8986061"
# Serials are seed * 10**6 + device number: each seed has its own SIMs.
MAX_DEVICES_PER_FLEET = 10**6

VEHICLE_APPS = (
    "telematics", "backend", "nav.amap", "map.update", "traffic.info",
    "music.qq", "fm.radio", "video.iqiyi", "wifi.hotspot", "ota.update",
)  # fmt: skip
# `vendor.unknown-app` is in no catalogue: the ingest must store and bill it anyway.
IOT_APPS = ("telematics", "iot.sensor", "ota.update", "vendor.unknown-app")

# The ingest's default clock skew (FLOWBILL_INGEST_MAX_CLOCK_SKEW_SECONDS); only the
# future-window malformation depends on it, and that one is a day ahead.
_INGEST_CLOCK_SKEW = timedelta(minutes=5)
_MINUTES_PER_DAY = 24 * 60
# `boot` is the minute the device booted, counted from here: it grows with every boot like a
# counter, so running the same seed again later never reuses a device's (boot, seq) span and
# the ingest's sequence-gap accounting stays right across runs.
_BOOT_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class SimulationOptions:
    """What to simulate; the rates are shares of reports (0 to 1)."""

    vehicles: int = 50
    iot_sims: int = 20
    minutes: int = 60
    report_interval_minutes: int = 1
    # The first window's start (UTC). None: the span ending at the last whole minute.
    start: datetime | None = None
    seed: int = 1
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    # Held back and sent after everything else.
    late_rate: float = 0.0
    # Chance per report that the device rebooted just before it: a new boot, seq from 0.
    reboot_rate: float = 0.0
    # Malformed messages per report, cycling through every malformation.
    malformed_rate: float = 0.0
    # Reports a device produces but that never reach the broker: sequence gaps to detect.
    loss_rate: float = 0.0
    # Messages per second when publishing; 0 = as fast as the broker takes them.
    rate: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "duplicate_rate",
            "reorder_rate",
            "late_rate",
            "reboot_rate",
            "malformed_rate",
            "loss_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("vehicles", "iot_sims"):
            if not 0 <= getattr(self, name) < MAX_DEVICES_PER_FLEET:
                raise ValueError(f"{name} must be between 0 and {MAX_DEVICES_PER_FLEET - 1}")
        if not 1 <= self.report_interval_minutes <= 60:
            raise ValueError("report_interval_minutes must be between 1 and 60")
        if self.minutes < self.report_interval_minutes:
            raise ValueError("minutes must cover at least one report interval")
        if self.start is not None and self.start.utcoffset() is None:
            raise ValueError("start must carry a time zone")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")

    def plan_start(self, now: datetime | None = None) -> datetime:
        """The first window's start: `start`, or `minutes` before the last whole minute."""
        if self.start is not None:
            return self.start.astimezone(UTC)
        now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
        return now - timedelta(minutes=self.minutes)


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


@dataclass(slots=True)
class AppTotals:
    items: int = 0
    up: int = 0
    down: int = 0


@dataclass
class SimulationSummary:
    """What a simulation sent: each distinct report counted once, however often it was sent."""

    per_app: dict[str, AppTotals] = field(default_factory=dict)
    reports: int = 0
    duplicates: int = 0
    # Malformed messages sent, by the reason the ingest will reject them with.
    malformed: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    messages: int = 0
    elapsed_seconds: float = 0.0

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def as_table(self) -> str:
        """Per app: items, MB and exact bytes up and down; then totals and message counts."""
        header = (
            f"{'app':<20} {'items':>10} {'MB up':>10} {'MB down':>11} "
            f"{'bytes up':>15} {'bytes down':>17}"
        )
        lines = [header, "-" * len(header)]
        total = AppTotals()
        for app in sorted(self.per_app):
            totals = self.per_app[app]
            total.items += totals.items
            total.up += totals.up
            total.down += totals.down
            lines.append(_table_row(app, totals))
        lines += ["-" * len(header), _table_row("total", total), ""]
        lines.append(
            f"distinct reports: {self.reports:,}   duplicates sent: {self.duplicates:,}   "
            f"lost (never sent): {self.lost:,}"
        )
        malformed = ", ".join(f"{reason}={n:,}" for reason, n in sorted(self.malformed.items()))
        lines.append(
            f"malformed sent: {sum(self.malformed.values()):,}"
            + (f" ({malformed})" if malformed else "")
        )
        published = f"messages published: {self.messages:,}"
        if self.elapsed_seconds:
            published += (
                f" in {self.elapsed_seconds:,.2f} s ({self.messages_per_second:,.0f} msg/s)"
            )
        lines.append(published)
        return "\n".join(lines)


def _table_row(label: str, totals: AppTotals) -> str:
    return (
        f"{label:<20} {totals.items:>10,} {totals.up / MB:>10.2f} {totals.down / MB:>11.2f} "
        f"{totals.up:>15,} {totals.down:>17,}"
    )


def device_iccid(issuer: str, seed: int, number: int) -> str:
    """The ICCID of device `number` of a seed's fleet: issuer block, serial, Luhn digit."""
    body = f"{issuer}{(seed % 10**6) * MAX_DEVICES_PER_FLEET + number:012d}"
    return body + iccid_check_digit(body)


# Per local hour, the chance per minute that a parked vehicle starts a trip. With trips of
# ~25 minutes this puts ~45% of vehicles on the road in the commutes, ~15% in the day,
# and ~1% at night.
_TRIP_START_PER_MINUTE = (
    0.0004, 0.0003, 0.0002, 0.0002, 0.0003, 0.001,   # 00-05
    0.008, 0.03, 0.03, 0.008, 0.007, 0.007,          # 06-11
    0.009, 0.007, 0.007, 0.008, 0.012, 0.03,         # 12-17
    0.03, 0.007, 0.005, 0.004, 0.002, 0.001,         # 18-23
)  # fmt: skip


def _commute(hour: int) -> bool:
    return 7 <= hour < 9 or 17 <= hour < 19


@dataclass(slots=True)
class _Device:
    iccid: str
    topic: str
    fleet: Fleet
    boot: int
    seq: int
    # Habits that stay with a vehicle (or SIM) for the whole plan.
    audio_app: str | None = None
    has_hotspot: bool = False
    has_vendor_app: bool = False
    # State carried from minute to minute.
    trip_minutes_left: int = 0
    navigating: bool = False
    playing_audio: bool = False
    sharing_wifi: bool = False
    video_minutes_left: int = 0
    # App -> bytes still to download (a map or OTA update spans several minutes).
    downloads: dict[str, int] = field(default_factory=dict)


def _between(rng: random.Random, low: int, high: int) -> int:
    # random.randint is several times slower; the plan draws millions of these.
    return low + int((high - low) * rng.random())


def _add(usage: dict[str, list[int]], app: str, up: int, down: int) -> None:
    totals = usage.get(app)
    if totals is None:
        usage[app] = [up, down]
    else:
        totals[0] += up
        totals[1] += down


def _start_trip(rng: random.Random, vehicle: _Device, hour: int) -> None:
    commute = _commute(hour)
    vehicle.trip_minutes_left = _between(rng, 15, 60) if commute else _between(rng, 5, 40)
    vehicle.navigating = rng.random() < (0.45 if commute else 0.65)
    vehicle.playing_audio = vehicle.audio_app is not None and rng.random() < 0.75
    vehicle.sharing_wifi = vehicle.has_hotspot and rng.random() < 0.5
    if rng.random() < 0.05:  # a passenger on the back seat watches a series
        vehicle.video_minutes_left = vehicle.trip_minutes_left


# Bytes an app moves in one minute of use: (up from, up to, down from, down to).
_Bytes = tuple[int, int, int, int]
_DRIVING: dict[str, _Bytes] = {
    "telematics": (2 * KB, 6 * KB, KB // 2, 2 * KB),
    "backend": (KB // 2, KB, KB, 3 * KB),
    "traffic.info": (KB // 2, 2 * KB, 5 * KB, 20 * KB),
    "nav.amap": (2 * KB, 10 * KB, 30 * KB, 300 * KB),
    "music.qq": (5 * KB, 20 * KB, 800 * KB, 1200 * KB),
    "fm.radio": (KB // 2, 2 * KB, 480 * KB, 960 * KB),  # a 64-128 kbit/s stream
    "video.iqiyi": (20 * KB, 60 * KB, 3 * MB, 8 * MB),
    "wifi.hotspot": (50 * KB, 500 * KB, 200 * KB, 5 * MB),  # a burst from passengers' phones
}
# Parked: the telematics unit keeps its heartbeat; the owner's phone app pokes the car.
_PARKED: dict[str, _Bytes] = {
    "telematics": (KB, 3 * KB, KB // 4, KB),
    "backend": (KB // 4, KB, KB // 2, 2 * KB),
    "video.iqiyi": _DRIVING["video.iqiyi"],
}
_IOT: dict[str, _Bytes] = {
    "iot.sensor": (200, 2000, 20, 200),
    "telematics": (64, 512, 32, 256),
    "vendor.unknown-app": (100, 5000, 0, 2000),
}


def _use(
    rng: random.Random, usage: dict[str, list[int]], rates: dict[str, _Bytes], app: str
) -> None:
    up_from, up_to, down_from, down_to = rates[app]
    _add(usage, app, _between(rng, up_from, up_to), _between(rng, down_from, down_to))


def _vehicle_minute(
    rng: random.Random, vehicle: _Device, hour: int, usage: dict[str, list[int]]
) -> None:
    draw = rng.random
    if vehicle.trip_minutes_left == 0 and draw() < _TRIP_START_PER_MINUTE[hour]:
        _start_trip(rng, vehicle, hour)
    if vehicle.trip_minutes_left > 0:
        vehicle.trip_minutes_left -= 1
        rates = _DRIVING
        _use(rng, usage, rates, "telematics")
        _use(rng, usage, rates, "backend")
        _use(rng, usage, rates, "traffic.info")
        if vehicle.navigating:
            _use(rng, usage, rates, "nav.amap")
        if vehicle.playing_audio and vehicle.audio_app is not None:
            _use(rng, usage, rates, vehicle.audio_app)
        if vehicle.sharing_wifi and draw() < 0.35:
            _use(rng, usage, rates, "wifi.hotspot")
        if "map.update" not in vehicle.downloads and draw() < 0.0005:
            vehicle.downloads["map.update"] = _between(rng, 10 * MB, 60 * MB)
    else:
        rates = _PARKED
        _use(rng, usage, rates, "telematics")
        if draw() < 0.05:
            _use(rng, usage, rates, "backend")
        # OTA updates are pushed at night, to parked cars.
        if 1 <= hour < 5 and "ota.update" not in vehicle.downloads and draw() < 0.0005:
            vehicle.downloads["ota.update"] = _between(rng, 20 * MB, 80 * MB)
        if 19 <= hour < 23 and vehicle.video_minutes_left == 0 and draw() < 0.0005:
            vehicle.video_minutes_left = _between(rng, 10, 45)  # someone waits in the car
    if vehicle.video_minutes_left > 0:
        vehicle.video_minutes_left -= 1
        _use(rng, usage, rates, "video.iqiyi")
    if vehicle.downloads:
        _download(rng, vehicle, usage, low=4 * MB, high=15 * MB)


def _iot_minute(rng: random.Random, sim: _Device, hour: int, usage: dict[str, list[int]]) -> None:
    draw = rng.random
    # Meters and trackers report more often while people and goods move.
    if draw() < (0.9 if 7 <= hour < 21 else 0.4):
        _use(rng, usage, _IOT, "iot.sensor")
    # A keepalive every other minute or so; a sleeping meter sends an empty report.
    if draw() < 0.5:
        _use(rng, usage, _IOT, "telematics")
    if sim.has_vendor_app and draw() < 0.1:
        _use(rng, usage, _IOT, "vendor.unknown-app")
    if "ota.update" not in sim.downloads and draw() < 0.0002:
        sim.downloads["ota.update"] = _between(rng, MB, 8 * MB)
    if sim.downloads:
        _download(rng, sim, usage, low=MB // 2, high=2 * MB)  # a Cat-1 modem


def _download(
    rng: random.Random, device: _Device, usage: dict[str, list[int]], *, low: int, high: int
) -> None:
    for app, left in list(device.downloads.items()):
        chunk = min(left, _between(rng, low, high))
        _add(usage, app, chunk // 200, chunk)  # TCP acknowledgements go up
        if left > chunk:
            device.downloads[app] = left - chunk
        else:
            del device.downloads[app]


def _boot_minute(moment: datetime) -> int:
    return int((moment - _BOOT_EPOCH).total_seconds()) // 60


def _fleet(options: SimulationOptions, traffic: random.Random, start: datetime) -> list[_Device]:
    step = options.report_interval_minutes
    devices: list[_Device] = []
    fleets: tuple[tuple[Fleet, str, int], ...] = (
        ("vehicle", VEHICLE_ISSUER, options.vehicles),
        ("iot", IOT_ISSUER, options.iot_sims),
    )
    hour = start.astimezone(SHANGHAI).hour
    for fleet, issuer, count in fleets:
        for number in range(count):
            iccid = device_iccid(issuer, options.seed, number)
            # Booted some reports before the plan starts, and never at its first window, so
            # a reboot there makes a new boot.
            reports_since_boot = _between(traffic, 1, 12 * 60 // step)
            device = _Device(
                iccid=iccid,
                topic=USAGE_TOPIC.format(iccid=iccid),
                fleet=fleet,
                boot=_boot_minute(start) - reports_since_boot * step,
                seq=reports_since_boot,
            )
            if fleet == "vehicle":
                taste = traffic.random()
                device.audio_app = (
                    "music.qq" if taste < 0.5 else "fm.radio" if taste < 0.75 else None
                )
                device.has_hotspot = traffic.random() < 0.2
                # Some vehicles are already on the road when the plan starts.
                if traffic.random() < min(_TRIP_START_PER_MINUTE[hour] * 25, 0.5):
                    _start_trip(traffic, device, hour)
                    device.trip_minutes_left = _between(traffic, 1, device.trip_minutes_left + 1)
            else:
                device.has_vendor_app = traffic.random() < 0.3
            devices.append(device)
    return devices


MALFORMATIONS = (
    "not_json",  # cut off mid-write
    "not_utf8",  # an app name in GBK
    "wrong_type",  # "up": "12"
    "negative_bytes",
    "missing_field",
    "no_time_zone",  # "2026-11-25T08:00:00", no offset
    "bad_iccid",  # Luhn check digit wrong
    "iccid_mismatch",  # another SIM's ICCID in the payload
    "topic_not_an_iccid",  # flowbill/v1/sims/not-an-iccid/usage
    "end_before_start",
    "window_too_long",
    "future_window",
    "clock_not_synchronised",  # a window in 1970
    "empty_app",
    "app_with_space",
    "duplicate_app",
    "too_large",
)


def _malformed(
    malformation: str, rng: random.Random, report: UsageReport, topic: str, now: datetime
) -> tuple[str, bytes]:
    """A broken variant of a report, as a faulty device or firmware would send it."""
    fields: dict[str, Any] = msgspec.to_builtins(report)
    apps = fields["apps"] or [{"app": "telematics", "up": 1024, "down": 512}]
    window = report.end - report.start
    match malformation:
        case "not_json":
            payload = encode_report(report)
            return topic, payload[: _between(rng, 1, len(payload) - 1)]
        case "not_utf8":
            fields["apps"] = [{"app": "NAV-PLACEHOLDER", "up": 100, "down": 2000}]
            encoded = msgspec.json.encode(fields)
            return topic, encoded.replace(b"NAV-PLACEHOLDER", "导航".encode("gbk"))
        case "wrong_type":
            fields["apps"] = [{**apps[0], "up": str(apps[0]["up"])}, *apps[1:]]
        case "negative_bytes":
            fields["apps"] = [{**apps[0], "down": -apps[0]["down"] - 1}, *apps[1:]]
        case "missing_field":
            del fields[rng.choice(("iccid", "boot", "seq", "start", "end", "apps"))]
        case "no_time_zone":
            fields["start"] = report.start.replace(tzinfo=None).isoformat()
        case "bad_iccid":
            wrong = str((int(report.iccid[-1]) + _between(rng, 1, 9)) % 10)
            fields["iccid"] = report.iccid[:-1] + wrong
        case "iccid_mismatch":
            # A valid ICCID of a block no simulated SIM uses.
            fields["iccid"] = device_iccid("8986990", 0, _between(rng, 0, 10**6))
        case "topic_not_an_iccid":
            return USAGE_TOPIC.format(iccid="not-an-iccid"), msgspec.json.encode(fields)
        case "end_before_start":
            fields["end"] = (report.start - window).isoformat()
        case "window_too_long":
            fields["start"] = (report.end - timedelta(hours=1, minutes=1)).isoformat()
        case "future_window":
            future = now + timedelta(days=1)
            fields["start"] = future.isoformat()
            fields["end"] = (future + window).isoformat()
        case "clock_not_synchronised":
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            fields["start"] = epoch.isoformat()
            fields["end"] = (epoch + window).isoformat()
        case "empty_app":
            fields["apps"] = [{**apps[0], "app": ""}, *apps[1:]]
        case "app_with_space":
            fields["apps"] = [{**apps[0], "app": "my app"}, *apps[1:]]
        case "duplicate_app":
            fields["apps"] = [*apps, {**apps[0], "up": 1, "down": 1}]
        case "too_large":
            # A firmware that attaches its debug log; fields the ingest does not know are
            # ignored, so only the size is wrong.
            fields["debug_log"] = "x" * (MAX_PAYLOAD_BYTES + 1)
        case _:
            raise ValueError(f"unknown malformation {malformation!r}")
    return topic, msgspec.json.encode(fields)


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


def summarize(messages: Sequence[PlannedMessage]) -> SimulationSummary:
    """What a plan sends: per-app totals over distinct reports, duplicates, malformed."""
    summary = SimulationSummary(
        messages=len(messages), lost=messages.lost if isinstance(messages, FleetPlan) else 0
    )
    per_app = summary.per_app
    for message in messages:
        if message.kind == "duplicate":
            summary.duplicates += 1
        elif message.kind == "malformed":
            summary.malformed[str(message.expected_reason)] += 1
        elif message.report is not None:
            summary.reports += 1
            for item in message.report.apps:
                totals = per_app.get(item.app)
                if totals is None:
                    totals = per_app[item.app] = AppTotals()
                totals.items += 1
                totals.up += item.up
                totals.down += item.down
    return summary


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
) -> float:
    """Publish every message in order (QoS 1, each acknowledged); returns the seconds it took."""
    bar = _Progress(len(messages), enabled=progress)
    pending = iter(enumerate(messages))
    outstanding = 0
    last_progress = time.monotonic()
    publishers_left = max(1, min(in_flight, len(messages)))
    all_sent = asyncio.Event()
    async with aiomqtt.Client(
        host,
        port,
        username=username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=in_flight,
        max_queued_outgoing_messages=0,  # unbounded: in_flight already bounds it
    ) as client:
        # aiomqtt warns on every publish once more than 10 are pending; ours are bounded.
        client.pending_calls_threshold = in_flight
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
                await client.publish(message.topic, message.payload, qos=qos, timeout=math.inf)
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
) -> SimulationSummary:
    """Plan the fleet, publish it, and say what was sent."""
    plan = plan_fleet(options)
    elapsed = await publish_plan(
        plan,
        host=host,
        port=port,
        username=username,
        password=password,
        rate=options.rate,
        progress=progress,
    )
    summary = summarize(plan)
    summary.elapsed_seconds = elapsed
    return summary


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _utc_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's command-line options."""
    parser.add_argument("--vehicles", type=int, default=50, help="vehicles (default 50)")
    parser.add_argument("--iot-sims", type=int, default=20, help="IoT SIMs (default 20)")
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes (default 60)")
    parser.add_argument("--interval", type=int, default=1, help="minutes per report (default 1)")
    parser.add_argument(
        "--start",
        type=_utc_datetime,
        help="first window's start, ISO 8601, UTC unless an offset is given "
        "(default: the span ending at the last whole minute)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages/s; 0 = as fast as possible (default)"
    )
    parser.add_argument("--seed", type=int, default=1, help="same seed, same fleet (default 1)")
    parser.add_argument(
        "--duplicates", type=_share, default=0.0, help="share of reports sent twice"
    )
    parser.add_argument(
        "--reorder", type=_share, default=0.0, help="chance a message swaps with the next"
    )
    parser.add_argument(
        "--late", type=_share, default=0.0, help="share of reports sent after all others"
    )
    parser.add_argument("--reboots", type=_share, default=0.0, help="reboot chance per report")
    parser.add_argument(
        "--malformed", type=_share, default=0.0, help="malformed messages per report"
    )
    parser.add_argument(
        "--loss", type=_share, default=0.0, help="share of reports never sent (sequence gaps)"
    )


def options_from_args(args: argparse.Namespace) -> SimulationOptions:
    """SimulationOptions from options parsed with `add_arguments`."""
    return SimulationOptions(
        vehicles=args.vehicles,
        iot_sims=args.iot_sims,
        minutes=args.minutes,
        report_interval_minutes=args.interval,
        start=args.start,
        rate=args.rate,
        seed=args.seed,
        duplicate_rate=args.duplicates,
        reorder_rate=args.reorder,
        late_rate=args.late,
        reboot_rate=args.reboots,
        malformed_rate=args.malformed,
        loss_rate=args.loss,
    )
