"""The platform margin report of a period: what sponsors and users are billed for traffic,
against the carrier's wholesale cost of every allocated byte and the revenue share paid out.

Each figure is the sum of the lines it comes from, each line rounded once: sponsor revenue
is the sum of every sponsor statement's lines, user revenue of every driver statement's
overage, revenue share of every partner's lines; the wholesale cost is one line per tariff.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

from billing.documents import rating, revenue_share, statements
from billing.documents.repository import margin as repo
from billing.documents.schemas import MarginBytes, MarginLine, MarginReport, StatementStatus
from flowbill import periods
from flowbill.db import Connection
from flowbill.periods import Calendar

_FIELDS = ("sponsor", "overage", "wholesale", "share")


def wholesale_cost(rows: list[repo.WholesaleRow]) -> dict[str, int]:
    """The carrier's cost per currency: each tariff's bytes, rounded by its rule, at its
    wholesale price, rounded once."""
    per_tariff: dict[datetime, list[repo.WholesaleRow]] = defaultdict(list)
    for row in rows:
        if row.tariff_from is None or row.item_rounded is None:
            raise statements.MissingTariff("allocation rows exist before the first tariff")
        per_tariff[row.tariff_from].append(row)
    cost: dict[str, int] = defaultdict(int)
    for group in per_tariff.values():
        first = group[0]
        assert first.currency is not None
        assert first.wholesale_price is not None
        _, amount = rating.rate_line(
            data_bytes=sum(r.bytes for r in group),
            item_rounded_bytes=sum(r.item_rounded or 0 for r in group),
            rule=statements.rule_of(first.unit, first.scope),
            unit_price=first.wholesale_price,
            currency=first.currency,
        )
        cost[first.currency] += amount
    return cost


async def margin_report(
    conn: Connection, *, period: date, calendar: Calendar, now: datetime
) -> MarginReport:
    """Sponsor revenue + user overage revenue − wholesale cost − revenue share, per currency."""
    tz = calendar.time_zone
    sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_FIELDS, 0))
    every_sponsor = await statements.sponsor_statement_lines(
        conn, sponsor_id=None, period=period, calendar=calendar
    )
    for line in every_sponsor:
        sums[line.currency]["sponsor"] += line.amount_minor
    for driver_line in await statements.billed_overage_lines(
        conn, period=period, calendar=calendar
    ):
        sums[driver_line.currency]["overage"] += driver_line.overage_minor
    for share in await revenue_share.all_share_lines(conn, period=period, calendar=calendar):
        sums[share.currency]["share"] += share.share_minor
    volume = await repo.bytes_by_tariff(conn, period=period)
    for currency, cost in wholesale_cost(volume).items():
        sums[currency]["wholesale"] += cost

    kinds: dict[str, int] = defaultdict(int)
    for row in volume:
        kinds["overage_without_driver" if row.without_payer else row.payer_kind] += row.bytes
    lines = []
    for currency, s in sorted(sums.items()):
        margin = s["sponsor"] + s["overage"] - s["wholesale"] - s["share"]
        lines.append(
            MarginLine(
                currency=currency,
                sponsor_revenue_minor=s["sponsor"],
                user_overage_revenue_minor=s["overage"],
                wholesale_cost_minor=s["wholesale"],
                revenue_share_minor=s["share"],
                margin_minor=margin,
                margin=rating.format_major(margin, currency),
            )
        )
    return MarginReport(
        period=periods.format_period(period),
        time_zone=tz,
        status=StatementStatus(calendar.state(period, now=now).value),
        bytes=MarginBytes(
            sponsor=kinds["sponsor"],
            wallet=kinds["wallet"],
            overage=kinds["overage"],
            overage_without_driver=kinds["overage_without_driver"],
            total=sum(row.bytes for row in volume),
        ),
        currencies=lines,
    )
