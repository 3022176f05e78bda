"""The fleet plan: reproducible, valid, realistic, and honest about what it sends."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowbill.units import MB
from ingest.protocol import (
    Rejection,
    RejectReason,
    UsageReport,
    is_valid_iccid,
    parse_report,
)
from simulator.fleet.arguments import add_arguments, options_from_args
from simulator.fleet.malformed import MALFORMATIONS
from simulator.fleet.options import SimulationOptions
from simulator.fleet.plan import FleetPlan, PlannedMessage, plan_fleet
from simulator.fleet.publish import _Progress
from simulator.fleet.summary import AppTotals, SimulationSummary, summarize
from simulator.fleet.traffic import (
    IOT_APPS,
    IOT_ISSUER,
    SHANGHAI,
    VEHICLE_APPS,
    VEHICLE_ISSUER,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
START = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)  # 06:00-10:00 in Shanghai: a commute
DAY_START = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # midnight in Shanghai
INGEST_SKEW = timedelta(minutes=5)


def options(**changes: Any) -> SimulationOptions:
    values: dict[str, Any] = {"vehicles": 20, "iot_sims": 5, "minutes": 240, "start": START}
    values.update(changes)
    return SimulationOptions(**values)


def reports(plan: FleetPlan) -> list[UsageReport]:
    return [m.report for m in plan if m.kind == "report" and m.report is not None]


def test_a_seed_gives_the_same_plan() -> None:
    faulty = {"duplicate_rate": 0.1, "reorder_rate": 0.1, "late_rate": 0.05, "malformed_rate": 0.1}
    a = plan_fleet(options(seed=7, reboot_rate=0.01, **faulty), now=NOW)
    b = plan_fleet(options(seed=7, reboot_rate=0.01, **faulty), now=NOW)
    assert [(m.topic, m.payload, m.kind) for m in a] == [(m.topic, m.payload, m.kind) for m in b]
    other = plan_fleet(options(seed=8, **faulty), now=NOW)
    assert {r.iccid for r in reports(other)}.isdisjoint({r.iccid for r in reports(a)})


def test_every_iccid_is_valid_and_tells_its_fleet() -> None:
    plan = plan_fleet(options(vehicles=30, iot_sims=12, minutes=5), now=NOW)
    fleets: dict[str, str | None] = {m.report.iccid: m.fleet for m in plan if m.report}
    assert len(fleets) == 42
    for iccid, fleet in fleets.items():
        assert len(iccid) == 20
        assert is_valid_iccid(iccid)
        assert iccid.startswith(VEHICLE_ISSUER if fleet == "vehicle" else IOT_ISSUER)
    assert Counter(fleets.values()) == {"vehicle": 30, "iot": 12}


@pytest.mark.parametrize("interval", [1, 5, 60])
def test_every_report_passes_the_ingest_rules(interval: int) -> None:
    plan = plan_fleet(options(report_interval_minutes=interval), now=NOW)
    assert len(plan) == 25 * (240 // interval)
    for m in plan:
        assert m.kind == "report"
        parsed = parse_report(m.topic, m.payload, now=plan.end, max_clock_skew=timedelta(0))
        assert isinstance(parsed, UsageReport), parsed
        assert parsed == m.report
        assert plan.start <= parsed.start
        assert parsed.end <= plan.end
        assert parsed.end - parsed.start == timedelta(minutes=interval)
        assert all(item.up + item.down > 0 for item in parsed.apps), "zero-byte apps are omitted"
        allowed = VEHICLE_APPS if m.fleet == "vehicle" else IOT_APPS
        assert {item.app for item in parsed.apps} <= set(allowed)
    if interval == 1:
        assert any(not r.apps for r in reports(plan)), "an idle minute is an empty report"


def test_sequences_step_by_one_within_a_boot_whatever_the_order() -> None:
    plan = plan_fleet(
        options(reboot_rate=0.01, reorder_rate=0.2, late_rate=0.05, duplicate_rate=0.05), now=NOW
    )
    by_boot: dict[tuple[str, int], list[UsageReport]] = defaultdict(list)
    for report in reports(plan):
        by_boot[(report.iccid, report.boot)].append(report)
    for boot_reports in by_boot.values():
        boot_reports.sort(key=lambda r: r.start)
        seqs = [r.seq for r in boot_reports]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    devices = {iccid for iccid, _ in by_boot}
    assert len(by_boot) > len(devices), "some devices rebooted"
    rebooted = [r for rs in by_boot.values() for r in rs if r.seq == 0]
    assert rebooted, "a new boot starts at seq 0"
    # A later boot has a larger boot number, so a device never reuses (boot, seq).
    for iccid in devices:
        boots = sorted((min(r.start for r in by_boot[k]), k[1]) for k in by_boot if k[0] == iccid)
        assert [b for _, b in boots] == sorted(b for _, b in boots)


def test_the_default_span_ends_at_the_last_whole_minute() -> None:
    now = datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
    plan = plan_fleet(SimulationOptions(vehicles=3, iot_sims=1, minutes=30), now=now)
    assert plan.end == datetime(2026, 11, 25, 12, 34, tzinfo=UTC)
    assert plan.start == plan.end - timedelta(minutes=30)
    assert max(r.end for r in reports(plan)) == plan.end


def test_windows_that_would_not_fit_are_left_out() -> None:
    plan = plan_fleet(options(minutes=62, report_interval_minutes=15), now=NOW)
    assert plan.end == START + timedelta(minutes=60)
    assert max(r.end for r in reports(plan)) == plan.end


def test_a_plan_ending_in_the_future_is_refused() -> None:
    with pytest.raises(ValueError, match="after now"):
        plan_fleet(options(start=NOW - timedelta(minutes=10), minutes=60), now=NOW)


@pytest.mark.parametrize(
    "bad",
    [
        {"duplicate_rate": 1.5},
        {"loss_rate": -0.1},
        {"minutes": 0},
        {"report_interval_minutes": 61},
        {"start": datetime(2026, 11, 24, 22, 0)},  # naive: no time zone
        {"vehicles": -1},
    ],
)
def test_impossible_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        options(**bad)


def test_traffic_follows_the_day_in_shanghai() -> None:
    day = options(
        vehicles=100, iot_sims=20, minutes=24 * 60, report_interval_minutes=5, start=DAY_START
    )
    plan = plan_fleet(day, now=NOW)
    nav_by_hour: Counter[int] = Counter()
    for report in reports(plan):
        hour = report.start.astimezone(SHANGHAI).hour
        nav_by_hour[hour] += sum(i.down for i in report.apps if i.app == "nav.amap")
    night = sum(nav_by_hour[h] for h in range(0, 5))
    commute = sum(nav_by_hour[h] for h in (7, 8, 17, 18))
    assert commute > 20 * max(night, 1)
    summary = summarize(plan)
    assert set(summary.per_app) == set(VEHICLE_APPS) | set(IOT_APPS), "every app shows up in a day"


def test_app_sizes_are_plausible_per_minute() -> None:
    plan = plan_fleet(options(vehicles=100, minutes=240), now=NOW)
    sizes: dict[str, list[int]] = defaultdict(list)
    for m in plan:
        assert m.report is not None
        for item in m.report.apps:
            sizes[f"{m.fleet}:{item.app}"].append(item.up + item.down)
        if m.fleet == "vehicle":
            assert "telematics" in {i.app for i in m.report.apps}, "telematics reports always"
    kb = 1024
    assert all(kb <= n <= 8 * kb for n in sizes["vehicle:telematics"])
    assert all(30 * kb <= n <= 320 * kb for n in sizes["vehicle:nav.amap"])
    assert all(0.75 * MB <= n <= 1.25 * MB for n in sizes["vehicle:music.qq"])
    assert all(3 * MB <= n <= 9 * MB for n in sizes["vehicle:video.iqiyi"])
    # Updates arrive as downloads of several MB a minute, for tens of MB in all.
    updates = sizes["vehicle:map.update"] + sizes["vehicle:ota.update"]
    assert all(n <= 16 * MB for n in updates)
    assert all(n < 4 * kb for n in sizes["iot:iot.sensor"] + sizes["iot:telematics"])


def test_malformed_messages_cover_every_class_and_carry_the_ingest_reason() -> None:
    plan = plan_fleet(options(minutes=10, malformed_rate=1.0), now=NOW)
    malformed = [m for m in plan if m.kind == "malformed"]
    assert len(malformed) == 25 * 10
    for m in malformed:
        # An ingest that reads the message an hour later still rejects it for the same reason.
        for now in (NOW, NOW + timedelta(hours=1)):
            verdict = parse_report(m.topic, m.payload, now=now, max_clock_skew=INGEST_SKEW)
            assert isinstance(verdict, Rejection), m.malformation
            assert verdict.reason == m.expected_reason, (m.malformation, verdict)
    assert {m.malformation for m in malformed} == set(MALFORMATIONS)
    assert {m.expected_reason for m in malformed} == set(RejectReason) - {
        RejectReason.UNSTORABLE,  # only the database can cause it
        RejectReason.TOO_OLD,  # a matter of the ingest's horizon, not of the message alone
    }
    by_class = {m.malformation: m for m in malformed}
    assert by_class["too_large"].expected_reason == RejectReason.TOO_LARGE
    assert by_class["topic_not_an_iccid"].topic == "flowbill/v1/sims/not-an-iccid/usage"
    assert by_class["topic_not_an_iccid"].expected_reason == RejectReason.BAD_TOPIC
    assert b'"up":"' in by_class["wrong_type"].payload


def test_duplicates_repeat_an_earlier_report_byte_for_byte() -> None:
    plan = plan_fleet(
        options(duplicate_rate=0.2, reorder_rate=0.2, late_rate=0.05, malformed_rate=0.02),
        now=NOW,
    )
    sent: set[bytes] = set()
    duplicates = 0
    for m in plan:
        if m.kind == "duplicate":
            duplicates += 1
            assert m.payload in sent, "a repeat comes after its original"
        elif m.kind == "report":
            sent.add(m.payload)
    assert duplicates > 0.15 * len(sent)


def test_faults_change_no_report() -> None:
    clean = plan_fleet(options(), now=NOW)
    faulty = plan_fleet(
        options(duplicate_rate=0.1, reorder_rate=0.1, late_rate=0.1, malformed_rate=0.1), now=NOW
    )
    assert sorted(m.payload for m in faulty if m.kind == "report") == sorted(
        m.payload for m in clean
    )


def test_reordering_swaps_neighbours_only() -> None:
    in_order = plan_fleet(options(), now=NOW)
    reordered = plan_fleet(options(reorder_rate=0.3), now=NOW)
    position = {m.payload: index for index, m in enumerate(in_order)}
    moves = [abs(position[m.payload] - index) for index, m in enumerate(reordered)]
    assert max(moves) == 1
    assert sum(moves) > 0.2 * len(moves)


def test_late_reports_are_sent_after_all_others() -> None:
    plan = plan_fleet(options(late_rate=0.05), now=NOW)
    starts = [m.report.start for m in plan if m.report]
    # On time, the windows never go back; the late tail starts over from an early window.
    tail = next(i for i in range(1, len(starts)) if starts[i] < starts[i - 1])
    assert starts[:tail] == sorted(starts[:tail])
    assert starts[tail:] == sorted(starts[tail:])
    assert 0.03 * len(starts) < len(starts) - tail < 0.07 * len(starts)


def test_lost_reports_are_counted_and_never_sent() -> None:
    plan = plan_fleet(options(loss_rate=0.05), now=NOW)
    summary = summarize(plan)
    assert summary.lost == plan.lost > 0
    assert summary.reports + summary.lost == 25 * 240


def test_the_summary_counts_each_distinct_report_once() -> None:
    plan = plan_fleet(
        options(duplicate_rate=0.2, reorder_rate=0.1, late_rate=0.05, malformed_rate=0.05),
        now=NOW,
    )
    summary = summarize(plan)
    distinct = reports(plan)
    assert summary.reports == len(distinct) == 25 * 240
    assert summary.messages == len(plan)
    assert summary.duplicates == sum(m.kind == "duplicate" for m in plan) > 0
    assert summary.malformed == Counter(str(m.expected_reason) for m in plan if m.expected_reason)
    assert summary.reports + summary.duplicates + sum(summary.malformed.values()) == len(plan)
    for app, totals in summary.per_app.items():
        items = [i for r in distinct for i in r.apps if i.app == app]
        assert totals.items == len(items)
        assert totals.up == sum(i.up for i in items)
        assert totals.down == sum(i.down for i in items)


def test_the_table_shows_mebibytes_and_exact_bytes() -> None:
    summary = SimulationSummary(
        per_app={
            "music.qq": AppTotals(items=2, up=1_048_576, down=3 * 1_048_576),
            "telematics": AppTotals(items=5, up=10_240, down=5_120),
        },
        reports=5,
        duplicates=1,
        malformed=Counter({"bad_window": 2}),
        messages=8,
        elapsed_seconds=2.0,
    )
    table = summary.as_table()
    music = next(line for line in table.splitlines() if line.startswith("music.qq"))
    assert music.split() == ["music.qq", "2", "1.00", "3.00", "1,048,576", "3,145,728"]
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "7", "1.01", "3.00", "1,058,816", "3,150,848"]
    assert "bad_window=2" in table
    assert "4 msg/s" in table


def test_progress_off_a_terminal_is_a_line_per_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    progress = _Progress(1234, enabled=True)
    for _ in range(1234):
        progress.advance()
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10
    assert lines[-1].startswith("published 1,234/1,234 (100.0 %)")


def test_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--vehicles", "7", "--iot-sims", "3", "--minutes", "30", "--interval", "5",
         "--start", "2026-11-24T22:00", "--rate", "500", "--seed", "9", "--duplicates", "0.02",
         "--reorder", "0.01", "--late", "0.005", "--reboots", "0.002", "--malformed", "0.01",
         "--loss", "0.001"]
    )  # fmt: skip
    assert options_from_args(args) == SimulationOptions(
        vehicles=7, iot_sims=3, minutes=30, report_interval_minutes=5, start=START, rate=500,
        seed=9, duplicate_rate=0.02, reorder_rate=0.01, late_rate=0.005, reboot_rate=0.002,
        malformed_rate=0.01, loss_rate=0.001,
    )  # fmt: skip
    assert options_from_args(parser.parse_args([])) == SimulationOptions()
    with pytest.raises(SystemExit):
        parser.parse_args(["--duplicates", "2"])


def test_planned_messages_are_plain_values() -> None:
    message = PlannedMessage("t", b"{}", "malformed", malformation="not_json")
    assert message.report is None
    assert message.expected_reason is None
