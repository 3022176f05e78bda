"""The fleet's devices and what each uses, minute by minute.

Traffic follows the day in Asia/Shanghai: vehicles take trips, mostly in the commutes at 7-9 and
17-19, with navigation, music or radio and passengers' video and Wi-Fi while they drive; map and
OTA updates are rare downloads of tens of MB; IoT SIMs send small sensor readings all day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from flowbill.units import KB, MB
from ingest.protocol import USAGE_TOPIC, iccid_check_digit
from simulator.fleet.options import MAX_DEVICES_PER_FLEET, SimulationOptions

SHANGHAI = ZoneInfo("Asia/Shanghai")

Fleet = Literal["vehicle", "iot"]

# ICCID issuer blocks: 89 (telecom) 86 (China), then an operator and issuer block of ours.
# Vehicles and IoT SIMs come from different blocks, so an ICCID tells which fleet it is in.
VEHICLE_ISSUER = "8986011"
IOT_ISSUER = "8986061"

VEHICLE_APPS = (
    "telematics", "backend", "nav.amap", "map.update", "traffic.info",
    "music.qq", "fm.radio", "video.iqiyi", "wifi.hotspot", "ota.update",
)  # fmt: skip
# `vendor.unknown-app` is in no catalogue: the ingest must store and bill it anyway.
IOT_APPS = ("telematics", "iot.sensor", "ota.update", "vendor.unknown-app")

# `boot` is the minute the device booted, counted from here: it grows with every boot like a
# counter, so running the same seed again later never reuses a device's (boot, seq) span and
# the ingest's sequence-gap accounting stays right across runs.
_BOOT_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


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
