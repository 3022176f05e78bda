"""Malformed messages: one of each kind a faulty device or firmware sends, for the ingest to
reject."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ingest.protocol import MAX_PAYLOAD_BYTES, USAGE_TOPIC, UsageReport, encode_report
from simulator.fleet.traffic import _between, device_iccid

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
