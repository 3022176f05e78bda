"""Sponsor and driver statements: lines, rounding once per line, CSV, drill-down, isolation.

Allocation rows come from `statement_factories` (a stand-in for the allocation run).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import httpx

from billing.documents import rating, statements
from billing.documents.rating import RoundingRule, RoundingScope
from flowbill.db import Connection
from flowbill.periods import Calendar
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.billing import statement_factories as f
from tests.conftest import (
    assert_bad_cursor,
    assert_problem,
    bearer,
    make_tenant,
    new_iccid,
    walk_pages,
)

CALENDAR = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_line_is_rounded_half_up_once_not_per_item(conn: Connection) -> None:
    period = date(2025, 3, 1)
    sponsor = await f.tenant(conn, role=Role.SPONSOR)
    policy = await f.policy(conn, sponsor_id=sponsor, unit_price="0.05")
    app = f.app_id("nav")
    for day in range(1, 11):
        await f.allocate(conn, window_start=f.at(period, day=day), app=app,
                         category="navigation", data_bytes=100 * 1024, policy=policy)  # fmt: skip
    statement = await statements.sponsor_statement(
        conn, sponsor_id=sponsor, period=period, calendar=CALENDAR, now=now()
    )
    [line] = statement.lines
    assert (line.items, line.bytes, line.rated_bytes) == (10, 1_024_000, 1_024_000)
    # 10 × 0.488 fen: 0 fen if each item were rounded, 4.88 → 5 fen for the line.
    assert line.amount_minor == 5
    assert line.amount == "0.05"
    assert line.mb == Decimal("0.977")
    assert line.unit_price == Decimal("0.05")
    assert (line.adjustment, line.used_in, line.currency) == (False, None, "CNY")
    assert [(t.currency, t.amount_minor, t.adjustment_minor) for t in statement.totals] == [
        ("CNY", 5, 0)
    ]
    assert statement.status == "closable"
    assert statement.invoice_number is None


async def test_lines_per_policy_terms_category_and_adjustment(conn: Connection) -> None:
    period = date(2025, 3, 1)
    sponsor = await f.tenant(conn, role=Role.SPONSOR)
    other = await f.tenant(conn, role=Role.SPONSOR)
    nav = await f.policy(conn, sponsor_id=sponsor, unit_price="0.05",
                         categories=("navigation", "map_update"))  # fmt: skip
    # The price changes from the 15th: usage after that is under the new terms.
    repriced = await f.terms(
        conn, policy=nav, effective_from=f.at(period, day=15, hour=0), unit_price="0.08",
        categories=("navigation", "map_update"),
    )  # fmt: skip
    music = await f.policy(conn, sponsor_id=sponsor, unit_price="0.10", categories=("music",))
    theirs = await f.policy(conn, sponsor_id=other, unit_price="1")
    app, maps, song = f.app_id("nav"), f.app_id("map"), f.app_id("music")
    rows: list[tuple[datetime, str, str, int, f.Policy, date, bool]] = [
        (f.at(period, day=3), app, "navigation", 3 * MB, nav, period, False),
        (f.at(period, day=4), app, "navigation", 2 * MB, nav, period, False),
        (f.at(period, day=20), app, "navigation", 10 * MB, repriced, period, False),
        (f.at(period, day=5), maps, "map_update", 7 * MB, nav, period, False),
        (f.at(period, day=6), song, "music", 1 * MB, music, period, False),
        # Late usage of January, booked in March after January closed.
        (f.at(date(2025, 1, 1), day=30), app, "navigation", 4 * MB, nav, period, True),
        (f.at(period, day=7), app, "navigation", 99 * MB, theirs, period, False),
        # Booked in April: not on March's statement.
        (f.at(period, day=31, hour=20), app, "navigation", MB, nav, date(2025, 4, 1), False),
    ]
    for start, app_name, category, size, policy, booked, adjustment in rows:
        await f.allocate(conn, window_start=start, app=app_name, category=category,
                         data_bytes=size, policy=policy, period=booked,
                         adjustment=adjustment)  # fmt: skip
    statement = await statements.sponsor_statement(
        conn, sponsor_id=sponsor, period=period, calendar=CALENDAR, now=now()
    )
    got = [
        (ln.policy_id, ln.terms_from, ln.category, ln.used_in, ln.bytes, ln.amount_minor)
        for ln in statement.lines
    ]
    assert got == [
        (nav.policy_id, nav.terms_from, "map_update", None, 7 * MB, 35),
        (nav.policy_id, nav.terms_from, "navigation", None, 5 * MB, 25),
        (nav.policy_id, repriced.terms_from, "navigation", None, 10 * MB, 80),
        (music.policy_id, music.terms_from, "music", None, 1 * MB, 10),
        (nav.policy_id, nav.terms_from, "navigation", "2025-01", 4 * MB, 20),
    ]
    assert [ln.adjustment for ln in statement.lines] == [False] * 4 + [True]
    assert len({ln.line_id for ln in statement.lines}) == 5
    [total] = statement.totals
    assert (total.bytes, total.amount_minor, total.adjustment_minor) == (27 * MB, 170, 20)
    assert total.amount == "1.70"


async def test_the_tariff_rounding_rule_is_applied_as_rating_says(conn: Connection) -> None:
    # Tariffs of this transaction only (rolled back): line scope to 1,000,000 bytes from
    # 2012-05-01, item scope to 1000 bytes from 2012-05-20 (both Shanghai).
    period = date(2012, 5, 1)
    first, second = f.at(period, day=1, hour=0), f.at(period, day=20, hour=0)
    for start, unit, scope in ((first, 1_000_000, "line"), (second, 1000, "item")):
        await conn.execute(
            "INSERT INTO tariffs (effective_from, currency, wholesale_per_mb, overage_per_mb,"
            " rounding_unit_bytes, rounding_scope) VALUES (%s, 'CNY', 0.1, 0.5, %s, %s)",
            (start, unit, scope),
        )
    sponsor = await f.tenant(conn, role=Role.SPONSOR)
    driver = await f.tenant(conn, role=Role.DRIVER)
    policy = await f.policy(conn, sponsor_id=sponsor, unit_price="0.37")
    app = f.app_id("nav")
    sim = new_iccid()
    before, after = [12_345, 999_999, 7], [1, 1001, 250_000]
    for day, sizes in ((5, before), (25, after)):
        for size in sizes:
            start = f.at(period, day=day)
            await f.allocate(conn, window_start=start, app=app, iccid=sim, category="navigation",
                             data_bytes=size, policy=policy)  # fmt: skip
            await f.allocate(conn, window_start=start, app=app, iccid=sim, category="navigation",
                             data_bytes=size, payer_kind="overage", payer_id=driver)  # fmt: skip
    statement = await statements.sponsor_statement(
        conn, sponsor_id=sponsor, period=period, calendar=CALENDAR, now=now()
    )
    line_rule = RoundingRule(1_000_000, RoundingScope.LINE)
    item_rule = RoundingRule(1000, RoundingScope.ITEM)
    assert [(ln.tariff_from, ln.bytes, ln.rated_bytes) for ln in statement.lines] == [
        (first, sum(before), rating.rated_bytes(before, line_rule)),
        (second, sum(after), rating.rated_bytes(after, item_rule)),
    ]
    assert [ln.rated_bytes for ln in statement.lines] == [2_000_000, 253_000]
    for line in statement.lines:
        assert line.amount_minor == rating.amount_minor(line.rated_bytes, Decimal("0.37"), "CNY")
    mine = await statements.driver_statement(
        conn, driver_id=driver, period=period, calendar=CALENDAR, now=now()
    )
    assert [(ln.overage_rated_bytes, ln.overage_minor) for ln in mine.lines] == [
        (2_000_000, rating.amount_minor(2_000_000, Decimal("0.5"), "CNY")),
        (253_000, rating.amount_minor(253_000, Decimal("0.5"), "CNY")),
    ]


# --- Over the API ---------------------------------------------------------------------------


async def _sponsor_with_usage(
    settings: Settings, *, period: date, items: int = 3, name: str = "Navigation"
) -> tuple[str, dict[str, str], f.Policy, str]:
    sponsor_id, key = await make_tenant(settings, role=Role.SPONSOR)
    app = f.app_id("nav")
    async with f.committed(settings) as conn:
        policy = await f.policy(conn, sponsor_id=UUID(sponsor_id), unit_price="0.0625", name=name)
        for n in range(items):
            await f.allocate(conn, window_start=f.at(period, day=1 + n % 28), app=app,
                             category="navigation", data_bytes=(n + 1) * 300_000,
                             policy=policy)  # fmt: skip
    return sponsor_id, bearer(key), policy, app


async def test_csv_and_json_agree(http: httpx.AsyncClient, settings: Settings) -> None:
    period = date(2025, 4, 1)
    name = '高德导航 "Navi", 全国'
    sponsor_id, headers, policy, app = await _sponsor_with_usage(
        settings, period=period, items=5, name=name
    )
    async with f.committed(settings) as conn:
        await f.allocate(conn, window_start=f.at(date(2025, 2, 1)), app=app,
                         category="navigation", data_bytes=123_456, policy=policy,
                         period=period, adjustment=True)  # fmt: skip
    as_json = await http.get("/v1/sponsor/statements/2025-04", headers=headers)
    assert as_json.status_code == 200, as_json.text
    as_csv = await http.get("/v1/sponsor/statements/2025-04.csv", headers=headers)
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in as_csv.headers["content-disposition"]
    body = as_json.json()
    assert body["sponsor_id"] == sponsor_id
    assert len(body["lines"]) == 2
    reader = csv.DictReader(io.StringIO(as_csv.content.decode("utf-8"), newline=""))
    assert tuple(reader.fieldnames or ()) == statements.CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == len(body["lines"])
    for row, line in zip(rows, body["lines"], strict=True):
        assert row["period"] == "2025-04"
        for column in ("line_id", "policy_name", "category", "currency", "amount"):
            assert row[column] == line[column]
        assert row["policy_name"] == name
        for column in ("policy_id", "items", "bytes", "rated_bytes", "amount_minor"):
            assert int(row[column]) == line[column]
        for column in ("mb", "unit_price"):
            assert Decimal(row[column]) == Decimal(line[column])
        for column in ("terms_from", "tariff_from"):
            assert datetime.fromisoformat(row[column]) == datetime.fromisoformat(line[column])
        assert row["adjustment"] == ("true" if line["adjustment"] else "false")
        assert (row["used_in"] or None) == line["used_in"]
        assert Decimal(row["amount"]) * 100 == int(row["amount_minor"])
    total = sum(int(row["amount_minor"]) for row in rows)
    assert body["totals"][0]["amount_minor"] == total


async def test_drill_down_pages_cover_the_line_exactly(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    period = date(2025, 5, 1)
    sponsor_id, key = await make_tenant(settings, role=Role.SPONSOR)
    headers_ = bearer(key)
    app = f.app_id("nav")
    sims = [new_iccid(), new_iccid()]
    async with f.committed(settings) as conn:
        policy = await f.policy(conn, sponsor_id=UUID(sponsor_id))
        for n in range(23):
            # Pairs of items share a window start (two SIMs): the key must break the tie.
            await f.allocate(conn, window_start=f.at(period, day=1 + n // 2),
                             iccid=sims[n % 2], app=app, category="navigation",
                             data_bytes=1000 + n, policy=policy)  # fmt: skip
    statement = (await http.get("/v1/sponsor/statements/2025-05", headers=headers_)).json()
    [line] = statement["lines"]
    url = f"/v1/sponsor/statements/2025-05/lines/{line['line_id']}/items"
    pages = await walk_pages(http, url, key=key, limit=5)
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    seen = [item for page in pages for item in page]
    assert len(seen) == 23 == line["items"]
    assert sum(item["bytes"] for item in seen) == line["bytes"]
    keys = [(i["window_start"], i["iccid"], i["boot"], i["seq"], i["app"]) for i in seen]
    assert len(set(keys)) == 23
    assert keys == sorted(keys)
    for item in seen:
        start = datetime.fromisoformat(item["window_start"])
        assert datetime.fromisoformat(item["window_end"]) == start + timedelta(minutes=1)
        assert item["received_at"] is not None
        assert item["iccid"] in sims
    # The operator sees the same items, page by page too.
    by_operator = await walk_pages(
        http,
        f"/v1/operator/billing/sponsors/{sponsor_id}/statements/2025-05/lines/"
        f"{line['line_id']}/items",
        key=operator_key,
        limit=7,
    )
    assert len(by_operator) == 4
    assert [item for page in by_operator for item in page] == seen

    # Cursors are checked: tampered, foreign or garbage ones are refused.
    first = (await http.get(url, params={"limit": 5}, headers=headers_)).json()
    for bad in ("garbage!", first["next_cursor"][:-4], "W10"):
        refused = await http.get(url, params={"cursor": bad}, headers=headers_)
        assert_bad_cursor(refused)
    other_line = line["line_id"].replace(".u", ".202501")
    foreign = await http.get(
        f"/v1/sponsor/statements/2025-05/lines/{other_line}/items",
        params={"cursor": first["next_cursor"]},
        headers=headers_,
    )
    assert_bad_cursor(foreign)
    for missing in (
        other_line,
        "1.2.navigation.3.u",
        "not-a-line",
        "9" * 30 + ".0.x.0.u",
        "1.999999999999999999.navigation.0.u",
    ):
        answer = await http.get(
            f"/v1/sponsor/statements/2025-05/lines/{missing}/items", headers=headers_
        )
        assert_problem(answer, 404, "statement-line-not-found")
    assert_problem(await http.get(url, params={"limit": 0}, headers=headers_), 422, "invalid-input")


async def test_adjustment_lines_drill_down_to_their_month_of_use(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    period = date(2025, 6, 1)
    sponsor_id, key = await make_tenant(settings, role=Role.SPONSOR)
    app = f.app_id("nav")
    async with f.committed(settings) as conn:
        policy = await f.policy(conn, sponsor_id=UUID(sponsor_id))
        await f.allocate(conn, window_start=f.at(period), app=app, category="navigation",
                         data_bytes=5000, policy=policy)  # fmt: skip
        for month, size in ((3, 700), (4, 800), (4, 900)):
            await f.allocate(conn, window_start=f.at(date(2025, month, 1)), app=app,
                             category="navigation", data_bytes=size, policy=policy,
                             period=period, adjustment=True)  # fmt: skip
    body = (await http.get("/v1/sponsor/statements/2025-06", headers=bearer(key))).json()
    assert [(ln["adjustment"], ln["used_in"], ln["bytes"]) for ln in body["lines"]] == [
        (False, None, 5000),
        (True, "2025-03", 700),
        (True, "2025-04", 1700),
    ]
    for line in body["lines"]:
        items = await http.get(
            f"/v1/sponsor/statements/2025-06/lines/{line['line_id']}/items", headers=bearer(key)
        )
        assert items.status_code == 200, items.text
        assert sum(i["bytes"] for i in items.json()["items"]) == line["bytes"]


async def test_sponsors_never_see_each_others_statements(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    period = date(2025, 7, 1)
    mine, my_headers, _, _ = await _sponsor_with_usage(settings, period=period)
    _, their_key = await make_tenant(settings, role=Role.SPONSOR)
    theirs = bearer(their_key)
    statement = (await http.get("/v1/sponsor/statements/2025-07", headers=my_headers)).json()
    [line] = statement["lines"]
    other = (await http.get("/v1/sponsor/statements/2025-07", headers=theirs)).json()
    assert other["lines"] == []
    assert other["totals"] == []
    peek = await http.get(
        f"/v1/sponsor/statements/2025-07/lines/{line['line_id']}/items", headers=theirs
    )
    assert_problem(peek, 404, "statement-line-not-found")
    as_operator = await http.get(
        f"/v1/operator/billing/sponsors/{mine}/statements/2025-07", headers=bearer(operator_key)
    )
    assert as_operator.json()["lines"] == statement["lines"]
    _, driver_key = await make_tenant(settings, role=Role.DRIVER)
    assert_problem(
        await http.get("/v1/sponsor/statements/2025-07", headers=bearer(driver_key)),
        403,
        "role-not-allowed",
    )
    assert_problem(
        await http.get("/v1/sponsor/statements/2025-07", headers=bearer(operator_key)),
        403,
        "role-not-allowed",
    )
    answer = await http.get(
        f"/v1/operator/billing/sponsors/{uuid4()}/statements/2025-07",
        headers=bearer(operator_key),
    )
    assert_problem(answer, 404, "sponsor-not-found")
    driver_id, _ = await make_tenant(settings, role=Role.DRIVER)
    answer = await http.get(
        f"/v1/operator/billing/sponsors/{driver_id}/statements/2025-07",
        headers=bearer(operator_key),
    )
    assert_problem(answer, 404, "sponsor-not-found")
    answer = await http.get(
        "/v1/operator/billing/sponsors/not-a-uuid/statements/2025-07",
        headers=bearer(operator_key),
    )
    assert_problem(answer, 422, "invalid-input")


async def test_bad_and_future_periods_are_refused(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, key = await make_tenant(settings, role=Role.SPONSOR)
    headers = bearer(key)
    for bad in ("2026-13", "2026-1", "26-01", "2026-00", "1999-12", "abc", "2026-01-01"):
        for suffix in ("", ".csv"):
            answer = await http.get(f"/v1/sponsor/statements/{bad}{suffix}", headers=headers)
            body = assert_problem(answer, 422, "invalid-period")
            assert body["detail"]
    current = CALENDAR.period_of(now())
    following = date(current.year + current.month // 12, current.month % 12 + 1, 1)
    for future in (following, date(current.year + 1, 1, 1)):
        answer = await http.get(f"/v1/sponsor/statements/{future:%Y-%m}", headers=headers)
        assert_problem(answer, 422, "period-in-future")
    this_month = await http.get(f"/v1/sponsor/statements/{current:%Y-%m}", headers=headers)
    assert this_month.status_code == 200, this_month.text
    assert this_month.json()["status"] == "open"
    assert_problem(
        await http.get("/v1/sponsor/statements/" + "9" * 30, headers=headers), 422, "invalid-input"
    )


async def test_driver_statement_shows_wallet_and_overage(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    period = date(2025, 8, 1)
    driver_id, key = await make_tenant(settings, role=Role.DRIVER)
    other_driver, _ = await make_tenant(settings, role=Role.DRIVER)
    sponsor = await make_tenant(settings, role=Role.SPONSOR)
    head_unit, box = new_iccid(), new_iccid()
    hotspot, music = f.app_id("wifi"), f.app_id("music")
    async with f.committed(settings) as conn:
        policy = await f.policy(conn, sponsor_id=UUID(sponsor[0]))
        rows = [
            (head_unit, hotspot, "wifi_hotspot", "wallet", 3 * MB, driver_id),
            (head_unit, hotspot, "wifi_hotspot", "overage", 5 * MB + 1, driver_id),
            (head_unit, hotspot, "wifi_hotspot", "overage", 2 * MB, driver_id),
            (head_unit, music, "music", "wallet", 1 * MB, driver_id),
            (box, hotspot, "wifi_hotspot", "overage", 100, driver_id),
            (box, hotspot, "wifi_hotspot", "overage", 9 * MB, other_driver),
        ]
        for iccid, app, category, kind, size, payer in rows:
            await f.allocate(conn, window_start=f.at(period), iccid=iccid, app=app,
                             category=category, data_bytes=size, payer_kind=kind,
                             payer_id=UUID(payer))  # fmt: skip
        await f.allocate(conn, window_start=f.at(period), iccid=head_unit, app=hotspot,
                         category="navigation", data_bytes=MB, policy=policy)  # fmt: skip
    answer = await http.get("/v1/driver/statements/2025-08", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    by_key = {(ln["iccid"], ln["category"]): ln for ln in body["lines"]}
    assert set(by_key) == {(head_unit, "wifi_hotspot"), (head_unit, "music"), (box, "wifi_hotspot")}
    hot = by_key[(head_unit, "wifi_hotspot")]
    # Default tariff: 0.29 CNY/MB, each item rounded up to 1 KiB.
    assert (hot["wallet_bytes"], hot["overage_bytes"]) == (3 * MB, 7 * MB + 1)
    assert hot["overage_rated_bytes"] == 7 * MB + 1024
    assert hot["overage_minor"] == 203  # 7.0009765625 MB × 0.29 = 2.03028 CNY
    assert by_key[(box, "wifi_hotspot")]["overage_rated_bytes"] == 1024
    assert by_key[(head_unit, "music")]["overage_minor"] == 0
    assert body["wallet_bytes"] == 4 * MB
    assert body["overage_bytes"] == 7 * MB + 101
    assert body["totals"][0]["amount_minor"] == 203
    as_operator = await http.get(
        f"/v1/operator/billing/drivers/{driver_id}/statements/2025-08",
        headers=bearer(operator_key),
    )
    assert as_operator.json() == body
    assert_problem(
        await http.get("/v1/driver/statements/2025-08", headers=bearer(sponsor[1])),
        403,
        "role-not-allowed",
    )
