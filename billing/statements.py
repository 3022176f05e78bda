"""Statements: a sponsor's lines per policy, terms, category and tariff with their amounts,
CSV, drill-down from a line to the device reports behind it, and a driver's own statement."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from billing import rating
from billing import statement_repository as repo
from billing.errors import DriverNotFound, LineNotFound, SponsorNotFound
from billing.statement_schemas import (
    CurrencyTotal,
    DrillDownItem,
    DrillDownPage,
    DriverStatement,
    DriverStatementLine,
    SponsorStatement,
    SponsorStatementLine,
    StatementStatus,
)
from flowbill import periods
from flowbill.db import Connection
from flowbill.paging import InvalidCursor
from flowbill.periods import Calendar
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LINE_ID = re.compile(
    r"^([0-9]{1,18})\.(-?[0-9]{1,18})\.([a-z_]{1,32})\.(-?[0-9]{1,18})\.(u|[0-9]{6})$"
)
_ICCID = re.compile(r"^[0-9]{19,20}$")
_APP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")

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


def public_line(row: repo.SponsorLineRow) -> SponsorStatementLine:
    """A statement line from its rows' sums: rated by the tariff, priced once."""
    if row.tariff_from is None or row.item_rounded is None:
        raise MissingTariff("allocation rows exist before the first tariff")
    if row.unit_price is None or row.currency is None or row.policy_name is None:
        raise LookupError(f"policy {row.policy_id} has no terms from {row.terms_from}")
    rated, amount = rating.rate_line(
        data_bytes=row.bytes,
        item_rounded_bytes=row.item_rounded,
        rule=rule_of(row.unit, row.scope),
        unit_price=row.unit_price,
        currency=row.currency,
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
        policy_name=row.policy_name,
        terms_from=row.terms_from,
        category=row.category,
        adjustment=row.used_in is not None,
        used_in=_used_in_text(row.used_in),
        tariff_from=row.tariff_from,
        items=row.items,
        bytes=row.bytes,
        rated_bytes=rated,
        mb=rating.display_mb(rated),
        unit_price=row.unit_price,
        currency=row.currency,
        amount_minor=amount,
        amount=rating.format_major(amount, row.currency),
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
    conn: Connection, *, sponsor_id: UUID, period: date, calendar: Calendar
) -> list[SponsorStatementLine]:
    rows = await repo.sponsor_lines(
        conn, period=period, tz=calendar.time_zone, sponsor_id=sponsor_id
    )
    return [public_line(row) for row in rows]


async def sponsor_statement(
    conn: Connection, *, sponsor_id: UUID, period: date, calendar: Calendar, now: datetime
) -> SponsorStatement:
    """A sponsor's statement of a period: its lines and totals, and whether it is invoiced."""
    lines = await sponsor_statement_lines(
        conn, sponsor_id=sponsor_id, period=period, calendar=calendar
    )
    invoice = await repo.find_invoice(conn, sponsor_id=sponsor_id, period=period)
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


def _encode_cursor(line: str, row: repo.DrillDownRow) -> str:
    key = [
        line,
        row.window_start.astimezone(UTC).isoformat(),
        row.iccid,
        row.boot,
        row.seq,
        row.app,
    ]
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, line: str) -> tuple[datetime, str, int, int, str]:
    """The key after which a page starts; anything but a cursor this line handed out is an
    `invalid-cursor` problem."""
    invalid = InvalidCursor("the cursor is not one this listing handed out")
    if len(cursor) > 600:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error):
        raise invalid from None
    if not isinstance(key, list) or len(key) != 6:
        raise invalid
    owner, start, iccid, boot, seq, app = key
    if owner != line or not all(isinstance(v, str) for v in (start, iccid, app)):
        raise invalid
    if not all(type(v) is int and 0 <= v < 2**63 for v in (boot, seq)):
        raise invalid
    if not _ICCID.fullmatch(iccid) or not _APP.fullmatch(app):
        raise invalid
    try:
        window_start = datetime.fromisoformat(start)
    except ValueError:
        raise invalid from None
    if window_start.tzinfo is None:
        raise invalid
    return window_start, iccid, boot, seq, app


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
    exists, tariff_until = await repo.tariff_until(conn, tariff_from)
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
) -> DrillDownPage:
    """A page of the usage items behind a statement line, with their device reports.

    Pages follow the items' key (window start, ICCID, boot, seq, app), not an offset, so a
    page never repeats or skips an item."""
    key = await _line_key(conn, sponsor_id=sponsor_id, period=period, line=line, calendar=calendar)
    after = decode_cursor(cursor, line=line) if cursor is not None else None
    rows = await repo.line_items(conn, key, after=after, limit=limit + 1)
    if not rows and after is None:
        raise LineNotFound(f"no line {line} on this statement")
    page = rows[:limit]
    return DrillDownPage(
        line_id=line,
        items=[
            DrillDownItem(
                window_start=r.window_start,
                window_end=r.window_end,
                iccid=r.iccid,
                boot=r.boot,
                seq=r.seq,
                app=r.app,
                bytes=r.bytes,
                received_at=r.received_at,
                batch_id=r.batch_id,
            )
            for r in page
        ],
        next_cursor=_encode_cursor(line, page[-1]) if len(rows) > limit else None,
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
