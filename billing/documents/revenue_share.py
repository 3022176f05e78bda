"""Revenue share: operator rules that give a partner tenant a percentage of the user-paid
traffic revenue of listed apps, and monthly revenue-share statements per partner.

User-paid traffic revenue is what users are billed for traffic: the overage bytes of SIMs
with a driver, rated at the tariff's overage price (see docs/billing.md for why wallet-paid
bytes are not in it). A line is one rule, app and tariff in a period; its share is the exact
revenue times the percent, rounded half-up once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

from billing.documents import rating, statements
from billing.documents.errors import PartnerNotFound, RuleHistoryFixed, RuleNotFound, RuleOverlaps
from billing.documents.repository import revenue_share as repo
from billing.documents.schemas import (
    RevenueShareLine,
    RevenueShareRuleCreate,
    RevenueShareRulePublic,
    RevenueShareRuleUpdate,
    RevenueShareStatement,
    ShareTotal,
    StatementStatus,
)
from flowbill import paging, periods
from flowbill.db import Connection
from flowbill.errors import InvalidInput
from flowbill.paging import Page
from flowbill.periods import Calendar
from tenants import service as tenants
from tenants.errors import TenantNotFound

_RULES = "revenue-share-rules"


async def _require_partner(conn: Connection, partner_id: UUID) -> None:
    try:
        await tenants.get_tenant(conn, partner_id)
    except TenantNotFound:
        raise PartnerNotFound(f"no tenant {partner_id}", partner_id=str(partner_id)) from None


async def _refuse_overlap(
    conn: Connection,
    *,
    partner_id: UUID,
    apps: Sequence[str],
    valid_from: datetime,
    valid_until: datetime | None,
    other_than: int | None,
) -> None:
    clash = await repo.overlapping_rule(
        conn,
        partner_id=partner_id,
        apps=apps,
        valid_from=valid_from,
        valid_until=valid_until,
        other_than=other_than,
    )
    if clash is not None:
        raise RuleOverlaps(
            f"rule {clash} already shares one of these apps with this partner in this time",
            rule_id=clash,
        )


async def create_rule(conn: Connection, request: RevenueShareRuleCreate) -> RevenueShareRulePublic:
    """A new rule. Its start may lie in the past (a contract agreed earlier)."""
    await _require_partner(conn, request.partner_id)
    await repo.lock_partner_rules(conn, request.partner_id)
    await _refuse_overlap(
        conn,
        partner_id=request.partner_id,
        apps=request.apps,
        valid_from=request.valid_from,
        valid_until=request.valid_until,
        other_than=None,
    )
    row = await repo.insert_rule(
        conn,
        partner_id=request.partner_id,
        name=request.name,
        apps=request.apps,
        percent=request.percent,
        valid_from=request.valid_from,
        valid_until=request.valid_until,
    )
    return RevenueShareRulePublic.model_validate(row)


async def rule(conn: Connection, rule_id: int) -> RevenueShareRulePublic:
    row = await repo.get_rule(conn, rule_id)
    if row is None:
        raise RuleNotFound(f"no revenue-share rule {rule_id}")
    return RevenueShareRulePublic.model_validate(row)


async def rules(
    conn: Connection, *, partner_id: UUID | None, cursor: str | None, limit: int
) -> Page[RevenueShareRulePublic]:
    """A page of rules in id order (of one partner, or every partner's)."""
    after = None
    if cursor is not None:
        (after,) = paging.decode_cursor(cursor, (int,), scope=_RULES)
    rows = await repo.list_rules(conn, partner_id=partner_id, after_id=after, limit=limit + 1)
    return paging.page(
        [RevenueShareRulePublic.model_validate(row) for row in rows],
        limit=limit,
        key=lambda rule: (rule.rule_id,),
        scope=_RULES,
    )


async def update_rule(
    conn: Connection, *, rule_id: int, change: RevenueShareRuleUpdate, now: datetime
) -> RevenueShareRulePublic:
    """Rename a rule, or end it (or extend it) with `valid_until`, from now on: its past,
    on which statements were already given, never changes."""
    found = await repo.get_rule(conn, rule_id)
    if found is None:
        raise RuleNotFound(f"no revenue-share rule {rule_id}")
    await repo.lock_partner_rules(conn, found.partner_id)
    current = await repo.get_rule(conn, rule_id, for_update=True)
    assert current is not None
    until = change.valid_until if "valid_until" in change.model_fields_set else current.valid_until
    name = change.name if change.name is not None else current.name
    if until != current.valid_until:
        if until is not None and until <= current.valid_from:
            raise InvalidInput("valid_until must be after the rule's valid_from")
        started = current.valid_from <= now
        ended = current.valid_until is not None and current.valid_until <= now
        if started and (ended or (until is not None and until < now)):
            raise RuleHistoryFixed(
                "a rule that has applied can only be ended or extended from now on"
            )
        await _refuse_overlap(
            conn,
            partner_id=current.partner_id,
            apps=current.apps,
            valid_from=current.valid_from,
            valid_until=until,
            other_than=rule_id,
        )
    row = await repo.update_rule(conn, rule_id=rule_id, name=name, valid_until=until)
    return RevenueShareRulePublic.model_validate(row)


async def delete_rule(conn: Connection, *, rule_id: int, now: datetime) -> None:
    """Delete a rule that has not started yet; one that has is ended with `valid_until`."""
    found = await repo.get_rule(conn, rule_id, for_update=True)
    if found is None:
        raise RuleNotFound(f"no revenue-share rule {rule_id}")
    if found.valid_from <= now:
        raise RuleHistoryFixed("this rule has applied: end it with valid_until instead")
    await repo.delete_rule(conn, rule_id)


def share_line(row: repo.ShareLineRow) -> RevenueShareLine:
    """A revenue-share line: the revenue base rated once, the share of the exact base rounded
    once (never the percent of an already rounded base)."""
    if (
        row.tariff_from is None
        or row.overage_item_rounded is None
        or row.currency is None
        or row.overage_price is None
    ):
        raise statements.MissingTariff("allocation rows exist before the first tariff")
    rated = revenue = share = 0
    if row.overage_bytes:
        rated = rating.rated_line_bytes(
            data_bytes=row.overage_bytes,
            item_rounded_bytes=row.overage_item_rounded,
            rule=statements.rule_of(row.unit, row.scope),
        )
        revenue = rating.amount_minor(rated, row.overage_price, row.currency)
        share = rating.amount_minor(rated, row.overage_price, row.currency, percent=row.percent)
    return RevenueShareLine(
        rule_id=row.rule_id,
        app=row.app,
        adjustment=row.used_in is not None,
        used_in=periods.format_period(row.used_in) if row.used_in else None,
        tariff_from=row.tariff_from,
        overage_bytes=row.overage_bytes,
        rated_bytes=rated,
        overage_price=row.overage_price,
        currency=row.currency,
        revenue_minor=revenue,
        revenue=rating.format_major(revenue, row.currency),
        percent=row.percent,
        share_minor=share,
        share=rating.format_major(share, row.currency),
        wallet_bytes=row.wallet_bytes,
    )


def share_totals(lines: Sequence[RevenueShareLine]) -> list[ShareTotal]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        sums[line.currency][0] += line.revenue_minor
        sums[line.currency][1] += line.share_minor
    return [
        ShareTotal(currency=c, revenue_minor=r, share_minor=s, share=rating.format_major(s, c))
        for c, (r, s) in sorted(sums.items())
    ]


async def all_share_lines(
    conn: Connection, *, period: date, calendar: Calendar
) -> list[RevenueShareLine]:
    """Every partner's lines of the period (for the margin report)."""
    rows = await repo.share_lines(conn, period=period, tz=calendar.time_zone, partner_id=None)
    return [share_line(row) for row in rows]


async def statement(
    conn: Connection, *, partner_id: UUID, period: date, calendar: Calendar, now: datetime
) -> RevenueShareStatement:
    """A partner's revenue-share statement of a period."""
    await _require_partner(conn, partner_id)
    rows = await repo.share_lines(conn, period=period, tz=calendar.time_zone, partner_id=partner_id)
    lines = [share_line(row) for row in rows]
    return RevenueShareStatement(
        partner_id=partner_id,
        period=periods.format_period(period),
        time_zone=calendar.time_zone,
        status=StatementStatus(calendar.state(period, now=now).value),
        lines=lines,
        totals=share_totals(lines),
    )
