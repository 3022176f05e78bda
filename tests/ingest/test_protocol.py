"""The wire protocol's rules, exhaustively and as properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.protocol import (
    MAX_PAYLOAD_BYTES,
    AppUsage,
    Rejection,
    RejectReason,
    UsageReport,
    encode_report,
    iccid_check_digit,
    is_valid_iccid,
    parse_report,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
ICCID = "89860012345678901238"
TOPIC = f"flowbill/v1/sims/{ICCID}/usage"


def payload(**changes: object) -> bytes:
    body: dict[str, object] = {
        "iccid": ICCID,
        "boot": 17,
        "seq": 4211,
        "start": "2026-11-25T08:00:00Z",
        "end": "2026-11-25T08:01:00Z",
        "apps": [
            {"app": "nav.amap", "up": 1234, "down": 56789},
            {"app": "telematics", "up": 20480, "down": 1024},
        ],
    }
    body.update(changes)
    return json.dumps(body).encode()


def parse(data: bytes, topic: str = TOPIC) -> UsageReport | Rejection:
    return parse_report(topic, data, now=NOW, max_clock_skew=SKEW)


def test_the_design_example_is_valid() -> None:
    report = parse(payload())
    assert isinstance(report, UsageReport)
    assert report.apps == [AppUsage("nav.amap", 1234, 56789), AppUsage("telematics", 20480, 1024)]
    assert report.start == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_known_iccids() -> None:
    assert is_valid_iccid(ICCID)
    assert is_valid_iccid("8986001234567890120")  # 19 digits
    assert not is_valid_iccid("89860012345678901239")
    assert not is_valid_iccid("8986001234567890123a")
    assert not is_valid_iccid("898600123456789012")  # 18 digits
    assert not is_valid_iccid("８９８６００１２３４５６７８９０１２３８")  # full-width digits


@pytest.mark.parametrize(
    ("data", "topic", "reason"),
    [
        (b"x" * (MAX_PAYLOAD_BYTES + 1), TOPIC, RejectReason.TOO_LARGE),
        (payload(), f"flowbill/v1/sims/{ICCID}/usage/x", RejectReason.BAD_TOPIC),
        (payload(), "flowbill/v1/sims/not-an-iccid/usage", RejectReason.BAD_TOPIC),
        (payload(), "flowbill/v1/sims/89860012345678901239/usage", RejectReason.BAD_TOPIC),
        (b"\xff\xfe{}", TOPIC, RejectReason.NOT_UTF8),
        (b'{"iccid": "\xff\xfe"}', TOPIC, RejectReason.NOT_UTF8),
        (
            payload(apps=[{"app": "nav", "up": 1, "down": 1}]).replace(b"nav", b"n\xc3v"),
            TOPIC,
            RejectReason.NOT_UTF8,
        ),
        (b"{not json", TOPIC, RejectReason.NOT_JSON),
        (b"", TOPIC, RejectReason.NOT_JSON),
        (b"[]", TOPIC, RejectReason.INVALID_FIELD),
        (payload(boot="17"), TOPIC, RejectReason.INVALID_FIELD),
        (payload(seq=-1), TOPIC, RejectReason.INVALID_FIELD),
        (payload(seq=1.5), TOPIC, RejectReason.INVALID_FIELD),
        (payload(apps=[{"app": "x", "up": "12", "down": 0}]), TOPIC, RejectReason.INVALID_FIELD),
        (payload(apps=[{"app": "x", "up": -1, "down": 0}]), TOPIC, RejectReason.INVALID_FIELD),
        (payload(apps=[{"app": "x", "up": 2**41, "down": 0}]), TOPIC, RejectReason.INVALID_FIELD),
        (payload(apps=[{"app": "x", "down": 0}]), TOPIC, RejectReason.INVALID_FIELD),
        (payload(apps=None), TOPIC, RejectReason.INVALID_FIELD),
        (payload(start="2026-11-25T08:00:00"), TOPIC, RejectReason.INVALID_FIELD),
        (payload(start="yesterday"), TOPIC, RejectReason.INVALID_FIELD),
        (payload(iccid="89860012345678901239"), TOPIC, RejectReason.BAD_ICCID),
        (payload(iccid="1234"), TOPIC, RejectReason.BAD_ICCID),
        (payload(iccid="8986001234567890120"), TOPIC, RejectReason.ICCID_MISMATCH),
        (payload(end="2026-11-25T08:00:00Z"), TOPIC, RejectReason.BAD_WINDOW),
        (payload(end="2026-11-25T07:59:00Z"), TOPIC, RejectReason.BAD_WINDOW),
        (payload(end="2026-11-25T09:00:01Z"), TOPIC, RejectReason.BAD_WINDOW),
        (
            payload(start="2026-11-25T09:04:00Z", end="2026-11-25T09:10:00Z"),
            TOPIC,
            RejectReason.BAD_WINDOW,
        ),
        (
            payload(start="1999-12-31T23:59:00Z", end="2000-01-01T00:00:00Z"),
            TOPIC,
            RejectReason.BAD_WINDOW,
        ),
        (payload(apps=[{"app": "", "up": 1, "down": 1}]), TOPIC, RejectReason.BAD_APP),
        (payload(apps=[{"app": "my app", "up": 1, "down": 1}]), TOPIC, RejectReason.BAD_APP),
        (payload(apps=[{"app": "a" * 65, "up": 1, "down": 1}]), TOPIC, RejectReason.BAD_APP),
        (
            payload(apps=[{"app": "m", "up": 1, "down": 1}, {"app": "m", "up": 2, "down": 2}]),
            TOPIC,
            RejectReason.DUPLICATE_APP,
        ),
    ],
)
def test_every_reject_class(data: bytes, topic: str, reason: RejectReason) -> None:
    result = parse(data, topic)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert result.detail


def test_a_window_within_the_clock_skew_is_accepted() -> None:
    assert isinstance(
        parse(payload(start="2026-11-25T09:03:00Z", end="2026-11-25T09:04:00Z")), UsageReport
    )


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert isinstance(parse(payload(firmware="1.2.3")), UsageReport)


def test_an_empty_app_list_is_a_valid_report() -> None:
    assert isinstance(parse(payload(apps=[])), UsageReport)


def test_offsets_other_than_utc_are_understood() -> None:
    report = parse(payload(start="2026-11-25T16:00:00+08:00", end="2026-11-25T16:01:00+08:00"))
    assert isinstance(report, UsageReport)
    assert report.start == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@st.composite
def reports(draw: st.DrawFn) -> UsageReport:
    body = draw(st.text("0123456789", min_size=18, max_size=19))
    iccid = body + iccid_check_digit(body)
    start = draw(
        st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 11, 24)).map(
            lambda d: d.replace(tzinfo=UTC)
        )
    )
    length = draw(st.integers(min_value=1, max_value=3600))
    names = draw(
        st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9._:\-]{0,20}", fullmatch=True), unique=True, max_size=12
        )
    )
    apps = [
        AppUsage(name, draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))) for name in names
    ]
    return UsageReport(
        iccid=iccid,
        boot=draw(st.integers(0, 2**31 - 1)),
        seq=draw(st.integers(0, 2**63 - 1)),
        start=start,
        end=start + timedelta(seconds=length),
        apps=apps,
    )


@settings(max_examples=300)
@given(reports())
def test_every_valid_report_round_trips(report: UsageReport) -> None:
    parsed = parse(encode_report(report), f"flowbill/v1/sims/{report.iccid}/usage")
    assert parsed == report


@settings(max_examples=500)
@given(st.binary(max_size=300), st.text(max_size=80))
def test_arbitrary_input_never_raises(data: bytes, topic: str) -> None:
    result = parse(data, topic)
    assert isinstance(result, (UsageReport, Rejection))


@settings(max_examples=1000)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_corrupting_a_valid_report_anywhere_never_raises(position: int, junk: bytes) -> None:
    data = payload()
    position = min(position, len(data))
    result = parse(data[:position] + junk + data[position:])
    assert isinstance(result, (UsageReport, Rejection))


@settings(max_examples=300)
@given(st.text("0123456789", min_size=18, max_size=19), st.integers(0, 9))
def test_luhn_accepts_exactly_one_check_digit(body: str, digit: int) -> None:
    assert is_valid_iccid(body + str(digit)) == (str(digit) == iccid_check_digit(body))


def test_a_window_older_than_the_horizon_is_too_old_and_the_boundary_is_kept() -> None:
    horizon = timedelta(days=35)
    on_the_edge = NOW - horizon
    just_past = on_the_edge - timedelta(seconds=1)

    def window(start: datetime) -> bytes:
        end = start + timedelta(minutes=1)
        return payload(start=start.isoformat(), end=end.isoformat())

    kept = parse_report(TOPIC, window(on_the_edge), now=NOW, max_clock_skew=SKEW, max_age=horizon)
    assert isinstance(kept, UsageReport)
    refused = parse_report(TOPIC, window(just_past), now=NOW, max_clock_skew=SKEW, max_age=horizon)
    assert isinstance(refused, Rejection)
    assert refused.reason == RejectReason.TOO_OLD
    assert "35 days" in refused.detail
    # Without a horizon (history loaded on purpose), the same report is a report.
    assert isinstance(parse(window(just_past)), UsageReport)
