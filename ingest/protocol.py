"""The device wire protocol v1: topic and payload rules, as pure functions.

A device report either becomes a `UsageReport` or a `Rejection` with a stable reason.
Nothing here does I/O, so every rule can be tested exhaustively.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

PROTOCOL_VERSION = "v1"
USAGE_TOPIC = "flowbill/v1/sims/{iccid}/usage"
COVERAGE_TOPIC = "flowbill/v1/sims/{iccid}/coverage"
USAGE_TOPIC_FILTER = "flowbill/v1/sims/+/usage"

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_WINDOW = timedelta(hours=1)
MAX_APPS_PER_REPORT = 256
# One app cannot move more than 1 TiB in one window of at most an hour: a larger
# counter is a device fault, and storing it would bill someone for it.
MAX_APP_BYTES = 2**40
MAX_BOOT = 2**31 - 1
MAX_SEQ = 2**63 - 1
# Windows before this are a device clock that never synchronised.
EARLIEST_WINDOW = datetime(2000, 1, 1, tzinfo=UTC)

_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_TOPIC = re.compile(r"flowbill/v1/sims/([^/]*)/usage")


class RejectReason(enum.StrEnum):
    """Why a message was not stored as usage. A bounded set: it labels a metric."""

    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    INVALID_FIELD = "invalid_field"
    BAD_ICCID = "bad_iccid"
    ICCID_MISMATCH = "iccid_mismatch"
    BAD_WINDOW = "bad_window"
    BAD_APP = "bad_app"
    DUPLICATE_APP = "duplicate_app"
    # The window started before the ingest horizon (FLOWBILL_INGEST_MAX_AGE): it may replay
    # a report that retention already dropped, so it cannot be deduplicated.
    TOO_OLD = "too_old"
    # Passed every protocol rule but the database refused it: a bug of ours, kept for study.
    UNSTORABLE = "unstorable"


class AppUsage(msgspec.Struct, frozen=True):
    app: str
    up: Annotated[int, msgspec.Meta(ge=0, le=MAX_APP_BYTES)]
    down: Annotated[int, msgspec.Meta(ge=0, le=MAX_APP_BYTES)]


class UsageReport(msgspec.Struct, frozen=True):
    iccid: str
    boot: Annotated[int, msgspec.Meta(ge=0, le=MAX_BOOT)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    start: Annotated[datetime, msgspec.Meta(tz=True)]
    end: Annotated[datetime, msgspec.Meta(tz=True)]
    apps: Annotated[list[AppUsage], msgspec.Meta(max_length=MAX_APPS_PER_REPORT)]


class Rejection(msgspec.Struct, frozen=True):
    reason: RejectReason
    detail: str


_decoder = msgspec.json.Decoder(UsageReport)
_encoder = msgspec.json.Encoder()


def iccid_check_digit(body: str) -> str:
    """The Luhn check digit that completes an ICCID body of 18 or 19 digits."""
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = ord(char) - 48
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_valid_iccid(iccid: str) -> bool:
    """19 or 20 ASCII digits whose last digit is the Luhn check digit."""
    return (
        19 <= len(iccid) <= 20
        and iccid.isascii()
        and iccid.isdigit()
        and iccid_check_digit(iccid[:-1]) == iccid[-1]
    )


def iccid_from_topic(topic: str) -> str | None:
    """The ICCID segment of a usage topic, or None when the topic is not one."""
    match = _TOPIC.fullmatch(topic)
    return match.group(1) if match else None


def encode_report(report: UsageReport) -> bytes:
    """The wire form of a report, as a device sends it."""
    return _encoder.encode(report)


def parse_report(
    topic: str,
    payload: bytes,
    *,
    now: datetime,
    max_clock_skew: timedelta,
    max_age: timedelta | None = None,
) -> UsageReport | Rejection:
    """Decode and check one message; the first rule it breaks names the rejection.
    `max_age`: the horizon before which a window is `too_old` (None: no horizon)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(
            RejectReason.TOO_LARGE, f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}"
        )
    topic_iccid = iccid_from_topic(topic)
    if topic_iccid is None:
        return Rejection(RejectReason.BAD_TOPIC, "topic is not flowbill/v1/sims/{iccid}/usage")
    if not is_valid_iccid(topic_iccid):
        return Rejection(RejectReason.BAD_TOPIC, "the topic's ICCID is not a valid ICCID")
    try:
        report = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        return Rejection(RejectReason.INVALID_FIELD, str(exc))
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a JSON string
        return Rejection(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}")
    except msgspec.DecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as utf_exc:
            return Rejection(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {utf_exc.start}")
        return Rejection(RejectReason.NOT_JSON, str(exc))
    return check_report(
        report, topic_iccid, now=now, max_clock_skew=max_clock_skew, max_age=max_age
    )


def check_report(
    report: UsageReport,
    topic_iccid: str,
    *,
    now: datetime,
    max_clock_skew: timedelta,
    max_age: timedelta | None = None,
) -> UsageReport | Rejection:
    """The rules a well-typed report must still meet."""
    if not is_valid_iccid(report.iccid):
        return Rejection(
            RejectReason.BAD_ICCID, "iccid must be 19-20 digits with a valid Luhn check digit"
        )
    if report.iccid != topic_iccid:
        return Rejection(RejectReason.ICCID_MISMATCH, "payload iccid differs from the topic's")
    if report.end <= report.start:
        return Rejection(RejectReason.BAD_WINDOW, "end must be after start")
    if report.end - report.start > MAX_WINDOW:
        return Rejection(RejectReason.BAD_WINDOW, "window longer than 1 hour")
    if report.end > now + max_clock_skew:
        return Rejection(RejectReason.BAD_WINDOW, "window ends in the future")
    if report.start < EARLIEST_WINDOW:
        return Rejection(RejectReason.BAD_WINDOW, "window starts before 2000-01-01")
    if max_age is not None and report.start < now - max_age:
        return Rejection(
            RejectReason.TOO_OLD, f"window starts more than {max_age.days} days before receipt"
        )
    seen: set[str] = set()
    for index, item in enumerate(report.apps):
        if not _APP_ID.fullmatch(item.app):
            return Rejection(
                RejectReason.BAD_APP,
                f"apps[{index}].app must be 1-64 characters of A-Z a-z 0-9 . _ : -, "
                "starting with a letter or digit",
            )
        if item.app in seen:
            return Rejection(RejectReason.DUPLICATE_APP, f"apps[{index}].app repeats {item.app!r}")
        seen.add(item.app)
    return report
