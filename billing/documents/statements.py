"""Statements: a sponsor's lines per policy, terms, category and tariff with their amounts,
CSV, drill-down from a line to the device reports behind it, and a driver's own statement."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from billing.documents import rating
from billing.documents.errors import DriverNotFound, LineNotFound, SponsorNotFound
from billing.documents.repository import invoices as invoice_repo
from billing.documents.repository import statements as repo
from billing.documents.repository import tariffs as tariff_repo
from billing.documents.schemas import (
    CurrencyTotal,
    DrillDownItem,
    DriverStatement,
    DriverStatementLine,
    SponsorStatement,
    SponsorStatementLine,
    StatementStatus,
)
from flowbill import paging, periods
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.periods import Calendar
from sponsors import service as sponsors
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LINE_ID = re.compile(
    r"^([0-9]{1,18})\.(-?[0-9]{1,18})\.([a-z_]{1,32})\.(-?[0-9]{1,18})\.(u|[0-9]{6})$"
)
# The drill-down's key: an item's (window start, ICCID, boot, seq, app).
ITEM_KEY = (datetime, str, int, int, str)

CSV_COLUMNS = (
    "period",
    "line_id",
    "policy_id",
    "policy_name",
    "terms_from",
    "category",
    "adjustment",
    "used_in",
    "tariff_from",
    "items",
    "bytes",
    "rated_bytes",
    "mb",
    "unit_price",
    "currency",
    "amount_minor",
    "amount",
)


class MissingTariff(RuntimeError):
    """Allocation rows older than the first tariff: the operator's tariffs are incomplete."""


def _micros(instant: datetime) -> int:
    return (instant - _EPOCH) // _MICROSECOND


def _instant(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def line_id(
    *,
    policy_id: int,
    terms_from: datetime,
    category: str,
    tariff_from: datetime,
    used_in: date | None,
) -> str:
    """A line's stable id: what selects its rows, readable and checked when it comes back."""
    tail = "u" if used_in is None else f"{used_in.year:04d}{used_in.month:02d}"
    return f"{policy_id}.{_micros(terms_from)}.{category}.{_micros(tariff_from)}.{tail}"


def rule_of(unit: int | None, scope: str | None) -> rating.RoundingRule:
    if unit is None or scope is None:
        raise MissingTariff("allocation rows exist before the first tariff")
    return rating.RoundingRule(unit_bytes=unit, scope=rating.RoundingScope(scope))


def _used_in_text(used_in: date | None) -> str | None:
    return periods.format_period(used_in) if used_in is not None else None


# (policy name, currency, unit price) of a policy's terms, as the sponsors domain tells them.
TermsPrice = tuple[str, str, Decimal]


def public_line(row: repo.SponsorLineRow, price: TermsPrice | None) -> SponsorStatementLine:
    """A statement line from its rows' sums and its terms' price: rated by the tariff, priced
    once."""
    if row.tariff_from is None or row.item_rounded is None:
        raise MissingTariff("allocation rows exist before the first tariff")
    if price is None:
        raise LookupError(f"policy {row.policy_id} has no terms from {row.terms_from}")
    policy_name, currency, unit_price = price
    rated, amount = rating.rate_line(
        data_bytes=row.bytes,
        item_rounded_bytes=row.item_rounded,
        rule=rule_of(row.unit, row.scope),
        unit_price=unit_price,
        currency=currency,
    )
    return SponsorStatementLine(
        line_id=line_id(
            policy_id=row.policy_id,
            terms_from=row.terms_from,
            category=row.category,
            tariff_from=row.tariff_from,
            used_in=row.used_in,
        ),
        policy_id=row.policy_id,
        policy_name=policy_name,
        terms_from=row.terms_from,
        category=row.category,
        adjustment=row.used_in is not None,
        used_in=_used_in_text(row.used_in),
        tariff_from=row.tariff_from,
        items=row.items,
        bytes=row.bytes,
        rated_bytes=rated,
        mb=rating.display_mb(rated),
        unit_price=unit_price,
        currency=currency,
        amount_minor=amount,
        amount=rating.format_major(amount, currency),
    )


def _currency_totals(parts: Iterable[tuple[str, int, int, int, bool]]) -> list[CurrencyTotal]:
    """Per currency: sums of (currency, bytes, rated bytes, amount, adjustment?) lines, never
    rounded again."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for currency, bytes_, rated, amount, adjustment in parts:
        total = sums[currency]
        total[0] += bytes_
        total[1] += rated
        total[2] += amount
        total[3] += amount if adjustment else 0
    return [
        CurrencyTotal(
            currency=currency,
            bytes=b,
            rated_bytes=r,
            amount_minor=a,
            amount=rating.format_major(a, currency),
            adjustment_minor=adj,
        )
        for currency, (b, r, a, adj) in sorted(sums.items())
    ]


def totals(lines: Iterable[SponsorStatementLine]) -> list[CurrencyTotal]:
    """Per currency: sums of the lines (never rounded again)."""
    return _currency_totals(
        (ln.currency, ln.bytes, ln.rated_bytes, ln.amount_minor, ln.adjustment) for ln in lines
    )


async def require_tenant(conn: Connection, tenant_id: UUID, role: Role) -> None:
    """The tenant exists and has the role, else a `sponsor-not-found`/`driver-not-found`."""
    error = SponsorNotFound if role is Role.SPONSOR else DriverNotFound
    try:
        tenant = await tenants.get_tenant(conn, tenant_id)
    except TenantNotFound:
        raise error(f"no {role.value} {tenant_id}") from None
    if tenant.role is not role:
        raise error(f"no {role.value} {tenant_id}")


async def sponsor_statement_lines(
    conn: Connection, *, sponsor_id: UUID | None, period: date, calendar: Calendar
) -> list[SponsorStatementLine]:
    """The lines of a sponsor's statement of a period (of every sponsor's: None)."""
    rows = await repo.sponsor_lines(
        conn, period=period, tz=calendar.time_zone, sponsor_id=sponsor_id
    )
    prices = await sponsors.terms_prices(conn, sorted({row.policy_id for row in rows}))
    return [public_line(row, prices.get((row.policy_id, row.terms_from))) for row in rows]


async def sponsor_statement(
    conn: Connection, *, sponsor_id: UUID, period: date, calendar: Calendar, now: datetime
) -> SponsorStatement:
    """A sponsor's statement of a period: its lines and totals, and whether it is invoiced."""
    lines = await sponsor_statement_lines(
        conn, sponsor_id=sponsor_id, period=period, calendar=calendar
    )
    invoice = await invoice_repo.find_invoice(conn, sponsor_id=sponsor_id, period=period)
    status = (
        StatementStatus.INVOICED
        if invoice is not None
        else StatementStatus(calendar.state(period, now=now).value)
    )
    return SponsorStatement(
        sponsor_id=sponsor_id,
        period=periods.format_period(period),
        time_zone=calendar.time_zone,
        status=status,
        closable_at=calendar.closable_at(period),
        invoice_number=invoice.number if invoice is not None else None,
        lines=lines,
        totals=totals(lines),
    )


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def statement_csv(statement: SponsorStatement) -> str:
    """The statement's lines as CSV: a header row, then one row per line, columns in
    `CSV_COLUMNS` order; amounts both in minor units and as decimals in major units."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in statement.lines:
        values = {"period": statement.period, **line.model_dump()}
        writer.writerow([_csv_value(values[column]) for column in CSV_COLUMNS])
    return out.getvalue()


# --- Drill-down -----------------------------------------------------------------------------


async def _line_key(
    conn: Connection, *, sponsor_id: UUID, period: date, line: str, calendar: Calendar
) -> repo.LineKey:
    found = _LINE_ID.fullmatch(line)
    missing = LineNotFound(f"no line {line[:100]} on this statement")
    if found is None:
        raise missing
    policy, terms, category, tariff, tail = found.groups()
    try:
        tariff_from, terms_from = _instant(int(tariff)), _instant(int(terms))
    except OverflowError:
        raise missing from None
    exists, tariff_until = await tariff_repo.tariff_until(conn, tariff_from)
    if not exists:
        raise missing
    used_from = used_until = None
    if tail != "u":
        year, month = int(tail[:4]), int(tail[4:])
        if not 1 <= month <= 12 or not periods.FIRST_YEAR <= year <= periods.LAST_YEAR:
            raise missing
        used_in = date(year, month, 1)
        used_from = calendar.start(used_in)
        used_until = calendar.end(used_in)
    return repo.LineKey(
        sponsor_id=sponsor_id,
        period=period,
        policy_id=int(policy),
        terms_from=terms_from,
        category=category,
        used_from=used_from,
        used_until=used_until,
        tariff_from=tariff_from,
        tariff_until=tariff_until,
    )


async def line_items(
    conn: Connection,
    *,
    sponsor_id: UUID,
    period: date,
    line: str,
    cursor: str | None,
    limit: int,
    calendar: Calendar,
) -> Page[DrillDownItem]:
    """A page of the usage items behind a statement line, with their device reports.

    Pages follow the items' key (window start, ICCID, boot, seq, app), not an offset, so a
    page never repeats or skips an item. A cursor belongs to its line: another line's is
    refused."""
    key = await _line_key(conn, sponsor_id=sponsor_id, period=period, line=line, calendar=calendar)
    after = paging.decode_cursor(cursor, ITEM_KEY, scope=line) if cursor is not None else None
    rows = await repo.line_items(conn, key, after=after, limit=limit + 1)
    if not rows and after is None:
        raise LineNotFound(f"no line {line} on this statement")
    return paging.page(
        [DrillDownItem.model_validate(row) for row in rows],
        limit=limit,
        key=lambda item: (item.window_start, item.iccid, item.boot, item.seq, item.app),
        scope=line,
    )


# --- Drivers --------------------------------------------------------------------------------


def driver_line(row: repo.DriverLineRow) -> DriverStatementLine:
    """The user's share of a SIM's category: wallet bytes, and overage at the tariff."""
    if (
        row.tariff_from is None
        or row.overage_item_rounded is None
        or row.currency is None
        or row.overage_price is None
    ):
        raise MissingTariff("allocation rows exist before the first tariff")
    rated, amount = (0, 0)
    if row.overage_bytes:
        rated, amount = rating.rate_line(
            data_bytes=row.overage_bytes,
            item_rounded_bytes=row.overage_item_rounded,
            rule=rule_of(row.unit, row.scope),
            unit_price=row.overage_price,
            currency=row.currency,
        )
    return DriverStatementLine(
        iccid=row.iccid,
        category=row.category,
        adjustment=row.used_in is not None,
        used_in=_used_in_text(row.used_in),
        tariff_from=row.tariff_from,
        wallet_bytes=row.wallet_bytes,
        overage_bytes=row.overage_bytes,
        overage_rated_bytes=rated,
        overage_mb=rating.display_mb(rated),
        overage_price=row.overage_price,
        currency=row.currency,
        overage_minor=amount,
        overage_amount=rating.format_major(amount, row.currency),
    )


def driver_totals(lines: Sequence[DriverStatementLine]) -> list[CurrencyTotal]:
    return _currency_totals(
        (ln.currency, ln.overage_bytes, ln.overage_rated_bytes, ln.overage_minor, ln.adjustment)
        for ln in lines
    )


async def billed_overage_lines(
    conn: Connection, *, period: date, calendar: Calendar
) -> list[DriverStatementLine]:
    """Every driver's overage lines of a period (for the margin). Overage of a SIM without a
    driver is billed to nobody: it is cost, not revenue, and not among them."""
    rows = await repo.driver_lines(conn, period=period, tz=calendar.time_zone, driver_id=None)
    return [driver_line(row) for row in rows if row.payer_id is not None and row.overage_bytes]


async def driver_statement(
    conn: Connection, *, driver_id: UUID, period: date, calendar: Calendar, now: datetime
) -> DriverStatement:
    """What a driver paid in a period: from the wallet, and overage, per SIM and category."""
    rows = await repo.driver_lines(conn, period=period, tz=calendar.time_zone, driver_id=driver_id)
    lines = [driver_line(row) for row in rows]
    return DriverStatement(
        driver_id=driver_id,
        period=periods.format_period(period),
        time_zone=calendar.time_zone,
        status=StatementStatus(calendar.state(period, now=now).value),
        wallet_bytes=sum(line.wallet_bytes for line in lines),
        overage_bytes=sum(line.overage_bytes for line in lines),
        lines=lines,
        totals=driver_totals(lines),
    )
