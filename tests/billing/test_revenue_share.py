"""Revenue-share rules and statements, and the platform margin report."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx

from billing.documents import margin, revenue_share, statements
from billing.documents.schemas import RevenueShareRuleCreate
from flowbill.db import Connection
from flowbill.periods import Calendar
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.billing import statement_factories as f
from tests.conftest import assert_bad_cursor, assert_problem, bearer, make_tenant, walk_pages

CALENDAR = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)
RULES = "/v1/operator/billing/revenue-share/rules"


def _rule(partner: str, apps: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "partner_id": partner,
        "name": "Map maker share",
        "apps": apps,
        "percent": "30",
        "valid_from": "2025-12-01T00:00:00+08:00",
        **extra,
    }


async def test_revenue_share_statement(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    operator = bearer(operator_key)
    period = date(2025, 12, 1)
    partner, _ = await make_tenant(settings, role=Role.PARTNER)
    handset_maker, _ = await make_tenant(settings, role=Role.PARTNER)
    driver, _ = await make_tenant(settings, role=Role.DRIVER)
    sponsor, _ = await make_tenant(settings, role=Role.SPONSOR)
    nav, music, other = f.app_id("nav"), f.app_id("music"), f.app_id("video")
    created = await http.post(RULES, json=_rule(partner, [nav, music]), headers=operator)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert Decimal(rule["percent"]) == 30
    theirs = await http.post(
        RULES, json=_rule(handset_maker, [nav], percent="10"), headers=operator
    )
    assert theirs.status_code == 201, theirs.text
    async with f.committed(settings) as conn:
        policy = await f.policy(conn, sponsor_id=UUID(sponsor))
        rows: list[tuple[datetime, str, str, int, UUID | None]] = [
            (f.at(period), nav, "overage", 5 * MB + 1, UUID(driver)),
            (f.at(period), nav, "overage", 2 * MB, UUID(driver)),
            (f.at(period), nav, "wallet", 4 * MB, UUID(driver)),
            # Overage of a SIM without a driver: nobody pays it, so it is no revenue.
            (f.at(period), nav, "overage", 3 * MB, None),
            (f.at(period), music, "overage", 1 * MB, UUID(driver)),
            (f.at(period), other, "overage", 7 * MB, UUID(driver)),
            # Used before the rule started (booked in December as an adjustment).
            (f.at(date(2025, 11, 1), day=30, hour=23), nav, "overage", 9 * MB, UUID(driver)),
        ]
        for start, app, kind, size, payer in rows:
            await f.allocate(conn, window_start=start, app=app, category="navigation",
                             data_bytes=size, payer_kind=kind, payer_id=payer, period=period,
                             adjustment=start < f.at(period, day=1, hour=0))  # fmt: skip
        await f.allocate(conn, window_start=f.at(period), app=nav, category="navigation",
                         data_bytes=10 * MB, policy=policy)  # fmt: skip
    answer = await http.get(
        f"/v1/operator/billing/revenue-share/partners/{partner}/statements/2025-12",
        headers=operator,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    got = [
        (ln["rule_id"], ln["app"], ln["overage_bytes"], ln["rated_bytes"], ln["revenue_minor"],
         ln["share_minor"], ln["wallet_bytes"], ln["adjustment"])
        for ln in body["lines"]
    ]  # fmt: skip
    expected = [
        # 7.0009765625 MB × 0.29 = 2.0302832 CNY; × 30 % = 0.6090850 CNY.
        (rule["rule_id"], nav, 7 * MB + 1, 7 * MB + 1024, 203, 61, 4 * MB, False),
        # 1 MB × 0.29 = 0.29 CNY; × 30 % = 0.087 CNY.
        (rule["rule_id"], music, MB, MB, 29, 9, 0, False),
    ]
    assert sorted(got) == sorted(expected)
    assert [(t["currency"], t["revenue_minor"], t["share_minor"], t["share"])
            for t in body["totals"]] == [("CNY", 232, 70, "0.70")]  # fmt: skip
    assert Decimal(body["lines"][0]["percent"]) == 30
    handset = await http.get(
        f"/v1/operator/billing/revenue-share/partners/{handset_maker}/statements/2025-12",
        headers=operator,
    )
    assert [(ln["app"], ln["share_minor"]) for ln in handset.json()["lines"]] == [(nav, 20)]
    nobody = await http.get(
        f"/v1/operator/billing/revenue-share/partners/{uuid4()}/statements/2025-12",
        headers=operator,
    )
    assert_problem(nobody, 404, "partner-not-found")
    report = await http.get("/v1/operator/billing/margin/2025-12", headers=operator)
    assert report.status_code == 200, report.text
    for line in report.json()["currencies"]:
        assert line["margin_minor"] == (
            line["sponsor_revenue_minor"] + line["user_overage_revenue_minor"]
            - line["wholesale_cost_minor"] - line["revenue_share_minor"]
        )  # fmt: skip


async def test_rules_are_managed_without_rewriting_the_past(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    operator = bearer(operator_key)
    partner, partner_key = await make_tenant(settings, role=Role.PARTNER)
    app = f.app_id("nav")
    running = (await http.post(RULES, json=_rule(partner, [app]), headers=operator)).json()
    overlapping = await http.post(
        RULES, json=_rule(partner, [f.app_id(), app], valid_from="2026-01-01T00:00:00Z"),
        headers=operator,
    )  # fmt: skip
    body = assert_problem(overlapping, 409, "revenue-share-rule-overlaps")
    assert body["rule_id"] == running["rule_id"]
    old = await http.post(
        RULES, json=_rule(partner, [app], valid_from="2020-01-01T00:00:00Z",
                          valid_until="2021-01-01T00:00:00Z"),
        headers=operator,
    )  # fmt: skip
    assert old.status_code == 201, old.text
    rule_url = f"{RULES}/{running['rule_id']}"
    for change in ({"valid_until": "2025-12-15T00:00:00Z"},):
        assert_problem(
            await http.patch(rule_url, json=change, headers=operator),
            409, "revenue-share-rule-history-fixed",
        )  # fmt: skip
    assert_problem(
        await http.patch(f"{RULES}/{old.json()['rule_id']}",
                         json={"valid_until": "2030-01-01T00:00:00Z"}, headers=operator),
        409, "revenue-share-rule-history-fixed",
    )  # fmt: skip
    renamed = await http.patch(
        rule_url, json={"name": "Renamed", "valid_until": "2031-01-01T00:00:00Z"},
        headers=operator,
    )  # fmt: skip
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Renamed"
    assert renamed.json()["valid_until"].startswith("2031-01-01")
    assert_problem(
        await http.delete(rule_url, headers=operator), 409, "revenue-share-rule-history-fixed"
    )
    future = await http.post(
        RULES, json=_rule(partner, [f.app_id()], valid_from="2031-06-01T00:00:00Z"),
        headers=operator,
    )  # fmt: skip
    assert future.status_code == 201, future.text
    future_url = f"{RULES}/{future.json()['rule_id']}"
    assert (await http.delete(future_url, headers=operator)).status_code == 204
    assert_problem(
        await http.get(future_url, headers=operator), 404, "revenue-share-rule-not-found"
    )
    listed = await http.get(RULES, params={"partner_id": partner}, headers=operator)
    assert [r["rule_id"] for r in listed.json()["items"]] == [
        running["rule_id"], old.json()["rule_id"]
    ]  # fmt: skip
    assert (await http.get(rule_url, headers=operator)).json() == renamed.json()

    invalid: list[dict[str, Any]] = [
        _rule(partner, [f.app_id()], percent="0"),
        _rule(partner, [f.app_id()], percent="100.01"),
        _rule(partner, [f.app_id()], percent="12.34567"),
        _rule(partner, [f.app_id()], percent="-5"),
        _rule(partner, []),
        _rule(partner, ["bad app!"]),
        _rule(partner, [f.app_id()], valid_until="2025-11-01T00:00:00+08:00"),
        _rule(partner, [f.app_id()], valid_from="2025-12-01T00:00:00"),
        {**_rule(partner, [f.app_id()]), "surprise": 1},
    ]
    for body_ in invalid:
        assert_problem(await http.post(RULES, json=body_, headers=operator), 422, "invalid-input")
    full = await http.post(RULES, json=_rule(partner, [f.app_id()], percent="100"),
                           headers=operator)  # fmt: skip
    assert full.status_code == 201, full.text
    assert_problem(
        await http.post(RULES, json=_rule(str(uuid4()), [f.app_id()]), headers=operator),
        404, "partner-not-found",
    )  # fmt: skip
    assert_problem(await http.get(f"{RULES}/abc", headers=operator), 422, "invalid-input")
    assert_problem(
        await http.get(f"{RULES}/999999999999", headers=operator),
        404, "revenue-share-rule-not-found",
    )  # fmt: skip
    assert_problem(await http.get(RULES, headers=bearer(partner_key)), 403, "role-not-allowed")


async def test_rules_page_through(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    operator = bearer(operator_key)
    partner, _ = await make_tenant(settings, role=Role.PARTNER)
    made = []
    for _ in range(5):
        rule = await http.post(RULES, json=_rule(partner, [f.app_id()]), headers=operator)
        assert rule.status_code == 201, rule.text
        made.append(rule.json())
    pages = await walk_pages(http, RULES, key=operator_key, limit=2,
                             params={"partner_id": partner})  # fmt: skip
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [r for page in pages for r in page] == made
    # Every partner's rules page too, in id order, each once.
    every = [r["rule_id"] for page in await walk_pages(http, RULES, key=operator_key, limit=500)
             for r in page]  # fmt: skip
    assert every == sorted(set(every))
    assert {r["rule_id"] for r in made} <= set(every)
    for cursor in ("garbage!", "W10", pages[0][0]["name"]):
        refused = await http.get(RULES, params={"cursor": cursor}, headers=operator)
        assert_bad_cursor(refused)


async def test_margin_report_arithmetic(conn: Connection) -> None:
    # A period no other test writes to: the margin reads every payer's rows.
    period = date(2004, 2, 1)
    automaker = await f.tenant(conn, role=Role.SPONSOR)
    map_vendor = await f.tenant(conn, role=Role.SPONSOR)
    driver = await f.tenant(conn, role=Role.DRIVER)
    partner = await f.tenant(conn, role=Role.PARTNER)
    cheap = await f.policy(conn, sponsor_id=automaker, unit_price="0.05")
    dear = await f.policy(conn, sponsor_id=map_vendor, unit_price="0.10", categories=("music",))
    shared, plain = f.app_id("shared"), f.app_id("plain")
    await revenue_share.create_rule(
        conn,
        RevenueShareRuleCreate(
            partner_id=partner, name="half", apps=[shared], percent=Decimal(50),
            valid_from=datetime(2004, 1, 1, tzinfo=UTC),
        ),
    )  # fmt: skip
    when = f.at(period)
    await f.allocate(conn, window_start=when, app=plain, category="navigation",
                     data_bytes=10 * MB, policy=cheap)  # fmt: skip
    await f.allocate(conn, window_start=when, app=plain, category="music",
                     data_bytes=3 * MB, policy=dear)  # fmt: skip
    for app, kind, size, payer in (
        (shared, "wallet", 4 * MB, driver),
        (shared, "overage", 2 * MB, driver),
        (shared, "overage", 1 * MB, None),
        (plain, "overage", 1 * MB, driver),
    ):
        await f.allocate(conn, window_start=when, app=app, category="other", data_bytes=size,
                         payer_kind=kind, payer_id=payer)  # fmt: skip
    now = datetime.now(UTC)
    report = await margin.margin_report(conn, period=period, calendar=CALENDAR, now=now)
    [cny] = report.currencies
    # Sponsors: 10 MB × 0.05 + 3 MB × 0.10 = 0.80; users: 3 MB × 0.29 = 0.87;
    # the carrier: 21 MB × 0.03 = 0.63; the partner: 50 % of 2 MB × 0.29 = 0.29.
    assert (cny.sponsor_revenue_minor, cny.user_overage_revenue_minor) == (80, 87)
    assert (cny.wholesale_cost_minor, cny.revenue_share_minor) == (63, 29)
    assert (cny.margin_minor, cny.margin) == (75, "0.75")
    assert report.bytes.model_dump() == {
        "sponsor": 13 * MB, "wallet": 4 * MB, "overage": 3 * MB,
        "overage_without_driver": MB, "total": 21 * MB,
    }  # fmt: skip
    # The report is the sum of the statements.
    sponsor_total = 0
    for sponsor in (automaker, map_vendor):
        statement = await statements.sponsor_statement(
            conn, sponsor_id=sponsor, period=period, calendar=CALENDAR, now=now
        )
        sponsor_total += statement.totals[0].amount_minor
    assert sponsor_total == cny.sponsor_revenue_minor
    mine = await statements.driver_statement(
        conn, driver_id=driver, period=period, calendar=CALENDAR, now=now
    )
    assert mine.totals[0].amount_minor == cny.user_overage_revenue_minor
    shares = await revenue_share.statement(
        conn, partner_id=partner, period=period, calendar=CALENDAR, now=now
    )
    assert shares.totals[0].share_minor == cny.revenue_share_minor
