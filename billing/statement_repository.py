"""SQL of statements, invoices, credit notes, revenue share and the margin report.

Statements read the allocation rows of a booked period, grouped into lines, with the sums
that rating needs: bytes, and bytes with each row rounded up to its tariff's unit. Each row
is rated under the tariff in force at its window's start, as it is allocated under the
policy terms in force then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection

_TARIFF_CTE = """
tariff AS (
    SELECT effective_from, lead(effective_from) OVER (ORDER BY effective_from) AS until,
           currency, wholesale_per_mb, overage_per_mb,
           rounding_unit_bytes AS unit, rounding_scope AS scope
      FROM tariffs
)"""
_TARIFF_JOIN = """
LEFT JOIN tariff t
       ON a.window_start >= t.effective_from AND (t.until IS NULL OR a.window_start < t.until)"""
# The period of use of an adjustment (booked in a later period than it was used in).
_USED_IN = (
    "CASE WHEN a.adjustment"
    " THEN (date_trunc('month', a.window_start AT TIME ZONE %(tz)s))::date END"
)
_ITEM_ROUNDED = "((a.bytes + t.unit - 1) / t.unit) * t.unit"


# --- Statement lines ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SponsorLineRow:
    payer_id: UUID
    policy_id: int
    terms_from: datetime
    category: str
    used_in: date | None
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    items: int
    bytes: int
    item_rounded: int | None
    policy_name: str | None
    currency: str | None
    unit_price: Decimal | None


async def sponsor_lines(
    conn: Connection, *, period: date, tz: str, sponsor_id: UUID | None
) -> list[SponsorLineRow]:
    """The lines of one sponsor's statement (or of every sponsor's, for the margin)."""
    only = "AND a.payer_id = %(sponsor)s" if sponsor_id is not None else ""
    query = f"""
        WITH {_TARIFF_CTE},
        line AS (
            SELECT a.payer_id, a.policy_id, a.terms_from, a.category, {_USED_IN} AS used_in,
                   t.effective_from AS tariff_from, t.unit, t.scope,
                   count(*) AS items, sum(a.bytes)::bigint AS bytes,
                   sum({_ITEM_ROUNDED})::bigint AS item_rounded
              FROM allocations a {_TARIFF_JOIN}
             WHERE a.payer_kind = 'sponsor' AND a.period = %(period)s {only}
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
        )
        SELECT line.*, p.name AS policy_name, p.currency, pt.unit_price
          FROM line
          LEFT JOIN policies p ON p.policy_id = line.policy_id
          LEFT JOIN policy_terms pt
                 ON pt.policy_id = line.policy_id AND pt.effective_from = line.terms_from
         ORDER BY line.payer_id, line.used_in NULLS FIRST, line.policy_id, line.terms_from,
                  line.category, line.tariff_from
    """
    async with conn.cursor(row_factory=class_row(SponsorLineRow)) as cur:
        await cur.execute(query, {"period": period, "tz": tz, "sponsor": sponsor_id})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class DriverLineRow:
    payer_id: UUID | None
    iccid: str
    category: str
    used_in: date | None
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    currency: str | None
    overage_price: Decimal | None
    wallet_bytes: int
    overage_bytes: int
    overage_item_rounded: int | None


async def driver_lines(
    conn: Connection, *, period: date, tz: str, driver_id: UUID | None
) -> list[DriverLineRow]:
    """The user's share per SIM and category (one driver's, or everyone's for the margin;
    overage of SIMs without a driver has payer NULL)."""
    only = "AND a.payer_id = %(driver)s" if driver_id is not None else ""
    query = f"""
        WITH {_TARIFF_CTE}
        SELECT a.payer_id, a.iccid, a.category, {_USED_IN} AS used_in,
               t.effective_from AS tariff_from, t.unit, t.scope, t.currency,
               t.overage_per_mb AS overage_price,
               coalesce(sum(a.bytes) FILTER (WHERE a.payer_kind = 'wallet'), 0)::bigint
                   AS wallet_bytes,
               coalesce(sum(a.bytes) FILTER (WHERE a.payer_kind = 'overage'), 0)::bigint
                   AS overage_bytes,
               coalesce(sum({_ITEM_ROUNDED}) FILTER (WHERE a.payer_kind = 'overage'), 0)::bigint
                   AS overage_item_rounded
          FROM allocations a {_TARIFF_JOIN}
         WHERE a.payer_kind IN ('wallet', 'overage') AND a.period = %(period)s {only}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
         ORDER BY 1, 2, 4 NULLS FIRST, 3, 5
    """
    async with conn.cursor(row_factory=class_row(DriverLineRow)) as cur:
        await cur.execute(query, {"period": period, "tz": tz, "driver": driver_id})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class DrillDownRow:
    window_start: datetime
    window_end: datetime | None
    iccid: str
    boot: int
    seq: int
    app: str
    bytes: int
    received_at: datetime | None
    batch_id: int


@dataclass(frozen=True, slots=True)
class LineKey:
    """What selects a sponsor statement line's allocation rows."""

    sponsor_id: UUID
    period: date
    policy_id: int
    terms_from: datetime
    category: str
    # For an adjustment line: the period of use, as instants [from, until).
    used_from: datetime | None
    used_until: datetime | None
    tariff_from: datetime
    tariff_until: datetime | None


async def tariff_until(conn: Connection, tariff_from: datetime) -> tuple[bool, datetime | None]:
    """(the tariff exists, when the next one starts)."""
    cur = await conn.execute(
        """
        SELECT (SELECT true FROM tariffs WHERE effective_from = %(f)s),
               (SELECT min(effective_from) FROM tariffs WHERE effective_from > %(f)s)
        """,
        {"f": tariff_from},
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0]), row[1]


async def line_items(
    conn: Connection,
    key: LineKey,
    *,
    after: tuple[datetime, str, int, int, str] | None,
    limit: int,
) -> list[DrillDownRow]:
    """A page of a line's usage items with their device reports, in key order."""
    conditions = [
        "a.payer_kind = 'sponsor'",
        "a.payer_id = %(sponsor)s",
        "a.period = %(period)s",
        "a.policy_id = %(policy)s",
        "a.terms_from = %(terms)s",
        "a.category = %(category)s",
        "a.window_start >= %(tariff_from)s",
    ]
    if key.tariff_until is not None:
        conditions.append("a.window_start < %(tariff_until)s")
    if key.used_from is None:
        conditions.append("NOT a.adjustment")
    else:
        conditions += [
            "a.adjustment",
            "a.window_start >= %(used_from)s",
            "a.window_start < %(used_until)s",
        ]
    if after is not None:
        conditions.append(
            "(a.window_start, a.iccid, a.boot, a.seq, a.app) > (%(ws)s, %(iccid)s, %(boot)s,"
            " %(seq)s, %(app)s)"
        )
    params: dict[str, Any] = {
        "sponsor": key.sponsor_id,
        "period": key.period,
        "policy": key.policy_id,
        "terms": key.terms_from,
        "category": key.category,
        "tariff_from": key.tariff_from,
        "tariff_until": key.tariff_until,
        "used_from": key.used_from,
        "used_until": key.used_until,
        "limit": limit,
    }
    if after is not None:
        params.update(zip(("ws", "iccid", "boot", "seq", "app"), after, strict=True))
    query = f"""
        SELECT a.window_start, r.window_end, a.iccid, a.boot, a.seq, a.app, a.bytes,
               r.received_at, a.batch_id
          FROM allocations a
          LEFT JOIN usage_reports r
                 ON r.iccid = a.iccid AND r.boot = a.boot AND r.seq = a.seq
                AND r.window_start = a.window_start
         WHERE {" AND ".join(conditions)}
         ORDER BY a.window_start, a.iccid, a.boot, a.seq, a.app
         LIMIT %(limit)s
    """
    async with conn.cursor(row_factory=class_row(DrillDownRow)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


# --- Margin ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WholesaleRow:
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    currency: str | None
    wholesale_price: Decimal | None
    payer_kind: str
    without_payer: bool
    bytes: int
    item_rounded: int | None


async def bytes_by_tariff(conn: Connection, *, period: date) -> list[WholesaleRow]:
    """Every byte booked in the period, per tariff and payer kind."""
    query = f"""
        WITH {_TARIFF_CTE}
        SELECT t.effective_from AS tariff_from, t.unit, t.scope, t.currency,
               t.wholesale_per_mb AS wholesale_price, a.payer_kind,
               a.payer_id IS NULL AS without_payer,
               sum(a.bytes)::bigint AS bytes, sum({_ITEM_ROUNDED})::bigint AS item_rounded
          FROM allocations a {_TARIFF_JOIN}
         WHERE a.period = %(period)s
         GROUP BY 1, 2, 3, 4, 5, 6, 7
         ORDER BY 1, 6, 7
    """
    async with conn.cursor(row_factory=class_row(WholesaleRow)) as cur:
        await cur.execute(query, {"period": period})
        return await cur.fetchall()


# --- Revenue share --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareLineRow:
    partner_id: UUID
    rule_id: int
    percent: Decimal
    app: str
    used_in: date | None
    tariff_from: datetime | None
    unit: int | None
    scope: str | None
    currency: str | None
    overage_price: Decimal | None
    overage_bytes: int
    overage_item_rounded: int | None
    wallet_bytes: int


async def share_lines(
    conn: Connection, *, period: date, tz: str, partner_id: UUID | None
) -> list[ShareLineRow]:
    """The user-paid bytes of each rule's apps booked in the period, per app and tariff."""
    only = "AND r.partner_id = %(partner)s" if partner_id is not None else ""
    user_paid = "a.payer_kind = 'overage' AND a.payer_id IS NOT NULL"
    query = f"""
        WITH {_TARIFF_CTE}
        SELECT r.partner_id, r.rule_id, r.percent, a.app, {_USED_IN} AS used_in,
               t.effective_from AS tariff_from, t.unit, t.scope, t.currency,
               t.overage_per_mb AS overage_price,
               coalesce(sum(a.bytes) FILTER (WHERE {user_paid}), 0)::bigint AS overage_bytes,
               coalesce(sum({_ITEM_ROUNDED}) FILTER (WHERE {user_paid}), 0)::bigint
                   AS overage_item_rounded,
               coalesce(sum(a.bytes) FILTER (WHERE a.payer_kind = 'wallet'), 0)::bigint
                   AS wallet_bytes
          FROM allocations a
          JOIN revenue_share_rules r
            ON a.app = ANY (r.apps) AND a.window_start >= r.valid_from
           AND (r.valid_until IS NULL OR a.window_start < r.valid_until)
          {_TARIFF_JOIN}
         WHERE a.payer_kind IN ('wallet', 'overage') AND a.period = %(period)s {only}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
         ORDER BY 1, 2, 4, 5 NULLS FIRST, 6
    """
    async with conn.cursor(row_factory=class_row(ShareLineRow)) as cur:
        await cur.execute(query, {"period": period, "tz": tz, "partner": partner_id})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule_id: int
    partner_id: UUID
    name: str
    apps: list[str]
    percent: Decimal
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime
    updated_at: datetime


_RULE_COLUMNS = (
    "rule_id, partner_id, name, apps, percent, valid_from, valid_until, created_at, updated_at"
)


async def lock_partner_rules(conn: Connection, partner_id: UUID) -> None:
    """Serialise rule changes of one partner (the overlap check reads, then writes)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('flowbill:share-rules:' || %s, 0))",
        (str(partner_id),),
    )


async def overlapping_rule(
    conn: Connection,
    *,
    partner_id: UUID,
    apps: Sequence[str],
    valid_from: datetime,
    valid_until: datetime | None,
    other_than: int | None,
) -> int | None:
    cur = await conn.execute(
        """
        SELECT rule_id FROM revenue_share_rules
         WHERE partner_id = %(partner)s AND apps && %(apps)s::text[]
           AND rule_id IS DISTINCT FROM %(other)s
           AND tstzrange(valid_from, valid_until) && tstzrange(%(from)s, %(until)s)
         ORDER BY rule_id LIMIT 1
        """,
        {
            "partner": partner_id,
            "apps": list(apps),
            "other": other_than,
            "from": valid_from,
            "until": valid_until,
        },
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def insert_rule(
    conn: Connection,
    *,
    partner_id: UUID,
    name: str,
    apps: Sequence[str],
    percent: Decimal,
    valid_from: datetime,
    valid_until: datetime | None,
) -> RuleRow:
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"""
            INSERT INTO revenue_share_rules (partner_id, name, apps, percent, valid_from,
                                             valid_until)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_RULE_COLUMNS}
            """,
            (partner_id, name, list(apps), percent, valid_from, valid_until),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_rule(conn: Connection, rule_id: int, *, for_update: bool = False) -> RuleRow | None:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"SELECT {_RULE_COLUMNS} FROM revenue_share_rules WHERE rule_id = %s{lock}",
            (rule_id,),
        )
        return await cur.fetchone()


async def list_rules(
    conn: Connection, *, partner_id: UUID | None, after_id: int | None, limit: int
) -> list[RuleRow]:
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_RULE_COLUMNS} FROM revenue_share_rules
             WHERE (%(partner)s::uuid IS NULL OR partner_id = %(partner)s)
               AND rule_id > %(after)s
             ORDER BY rule_id LIMIT %(limit)s
            """,
            {"partner": partner_id, "after": after_id or 0, "limit": limit},
        )
        return await cur.fetchall()


async def update_rule(
    conn: Connection, *, rule_id: int, name: str, valid_until: datetime | None
) -> RuleRow:
    async with conn.cursor(row_factory=class_row(RuleRow)) as cur:
        await cur.execute(
            f"""
            UPDATE revenue_share_rules SET name = %s, valid_until = %s, updated_at = now()
             WHERE rule_id = %s RETURNING {_RULE_COLUMNS}
            """,
            (name, valid_until, rule_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def delete_rule(conn: Connection, rule_id: int) -> None:
    await conn.execute("DELETE FROM revenue_share_rules WHERE rule_id = %s", (rule_id,))


# --- Document numbers and idempotency -------------------------------------------------------


async def next_number(conn: Connection, *, series: str, year: int) -> int:
    """The next number of the series in the year. The counter row stays locked until the
    transaction ends, so numbers are handed out in commit order and a rollback returns one."""
    cur = await conn.execute(
        """
        INSERT INTO document_counters (series, year, last_number) VALUES (%s, %s, 1)
        ON CONFLICT (series, year)
        DO UPDATE SET last_number = document_counters.last_number + 1
        RETURNING last_number
        """,
        (series, year),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True, slots=True)
class CommandRow:
    command: str
    request_digest: bytes
    document_number: str | None


async def claim_command(
    conn: Connection, *, key: str, command: str, digest: bytes
) -> CommandRow | None:
    """None when the key is new (and now ours); else what the key was first used for.

    A concurrent request with the same key waits here until the first one ends."""
    cur = await conn.execute(
        """
        INSERT INTO billing_commands (idempotency_key, command, request_digest)
        VALUES (%s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1
        """,
        (key, command, digest),
    )
    if await cur.fetchone() is not None:
        return None
    async with conn.cursor(row_factory=class_row(CommandRow)) as found:
        await found.execute(
            "SELECT command, request_digest, document_number FROM billing_commands"
            " WHERE idempotency_key = %s",
            (key,),
        )
        row = await found.fetchone()
    assert row is not None
    return row


async def record_command(conn: Connection, *, key: str, document_number: str) -> None:
    await conn.execute(
        "UPDATE billing_commands SET document_number = %s WHERE idempotency_key = %s",
        (document_number, key),
    )


# --- Invoices -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    invoice_id: int
    number: str
    sponsor_id: UUID
    period: date
    time_zone: str
    currency: str
    bytes: int
    total_minor: int
    issued_at: datetime
    issue_date: date
    credited_minor: int


_INVOICE_COLUMNS = """
    i.invoice_id, i.number, i.sponsor_id, i.period, i.time_zone, i.currency, i.bytes,
    i.total_minor, i.issued_at, i.issue_date,
    (SELECT coalesce(sum(c.total_minor), 0) FROM credit_notes c
      WHERE c.invoice_id = i.invoice_id)::bigint AS credited_minor"""


async def lock_invoice_slot(conn: Connection, *, sponsor_id: UUID, period: date) -> None:
    """Serialise closings of one sponsor's period until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('flowbill:invoice:' || %s, 0))",
        (f"{sponsor_id}:{period.isoformat()}",),
    )


async def find_invoice(
    conn: Connection,
    *,
    number: str | None = None,
    sponsor_id: UUID | None = None,
    period: date | None = None,
    lock: bool = False,
) -> InvoiceRow | None:
    """The invoice by number (optionally only if it is the sponsor's), or by sponsor and
    period. `lock` takes a row lock (a lock is not an update: the trigger allows it)."""
    conditions: list[str] = []
    params: list[object] = []
    if number is not None:
        conditions.append("i.number = %s")
        params.append(number)
    if sponsor_id is not None:
        conditions.append("i.sponsor_id = %s")
        params.append(sponsor_id)
    if period is not None:
        conditions.append("i.period = %s")
        params.append(period)
    assert conditions
    suffix = " FOR UPDATE OF i" if lock else ""
    async with conn.cursor(row_factory=class_row(InvoiceRow)) as cur:
        await cur.execute(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices i WHERE {' AND '.join(conditions)}{suffix}",
            params,
        )
        return await cur.fetchone()


async def list_invoices(
    conn: Connection,
    *,
    sponsor_id: UUID | None,
    period: date | None,
    before_id: int | None,
    limit: int,
) -> list[InvoiceRow]:
    """Newest first."""
    async with conn.cursor(row_factory=class_row(InvoiceRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_INVOICE_COLUMNS} FROM invoices i
             WHERE (%(sponsor)s::uuid IS NULL OR i.sponsor_id = %(sponsor)s)
               AND (%(period)s::date IS NULL OR i.period = %(period)s)
               AND (%(before)s::bigint IS NULL OR i.invoice_id < %(before)s)
             ORDER BY i.invoice_id DESC LIMIT %(limit)s
            """,
            {"sponsor": sponsor_id, "period": period, "before": before_id, "limit": limit},
        )
        return await cur.fetchall()


async def insert_invoice(
    conn: Connection,
    *,
    number: str,
    sponsor_id: UUID,
    period: date,
    time_zone: str,
    currency: str,
    data_bytes: int,
    total_minor: int,
    issued_at: datetime,
    issue_date: date,
) -> int:
    cur = await conn.execute(
        """
        INSERT INTO invoices (number, sponsor_id, period, time_zone, currency, bytes,
                              total_minor, issued_at, issue_date)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING invoice_id
        """,
        (
            number,
            sponsor_id,
            period,
            time_zone,
            currency,
            data_bytes,
            total_minor,
            issued_at,
            issue_date,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True, slots=True)
class InvoiceLineRow:
    line_no: int
    line_id: str
    policy_id: int
    policy_name: str
    terms_from: datetime
    category: str
    adjustment: bool
    used_in: date | None
    tariff_from: datetime
    items: int
    bytes: int
    rated_bytes: int
    mb: Decimal
    unit_price: Decimal
    amount_minor: int
    credited_minor: int = 0


_LINE_FIELDS = (
    "line_no",
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
    "amount_minor",
)


async def insert_invoice_lines(
    conn: Connection, *, invoice_id: int, lines: Sequence[InvoiceLineRow]
) -> None:
    if not lines:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            f"""
            INSERT INTO invoice_lines (invoice_id, {", ".join(_LINE_FIELDS)})
            VALUES (%s, {", ".join(["%s"] * len(_LINE_FIELDS))})
            """,
            [(invoice_id, *(getattr(line, f) for f in _LINE_FIELDS)) for line in lines],
        )


async def invoice_lines(conn: Connection, invoice_id: int) -> list[InvoiceLineRow]:
    async with conn.cursor(row_factory=class_row(InvoiceLineRow)) as cur:
        await cur.execute(
            f"""
            SELECT {", ".join("l." + f for f in _LINE_FIELDS)},
                   (SELECT coalesce(sum(c.amount_minor), 0) FROM credit_note_lines c
                     WHERE c.invoice_id = l.invoice_id AND c.line_no = l.line_no)::bigint
                       AS credited_minor
              FROM invoice_lines l WHERE l.invoice_id = %s ORDER BY l.line_no
            """,
            (invoice_id,),
        )
        return await cur.fetchall()


# --- Credit notes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditNoteRow:
    credit_note_id: int
    number: str
    invoice_id: int
    invoice_number: str
    sponsor_id: UUID
    reason: str
    currency: str
    total_minor: int
    issued_at: datetime
    issue_date: date


@dataclass(frozen=True, slots=True)
class CreditNoteLineRow:
    credit_note_id: int
    line_no: int
    line_id: str
    amount_minor: int


_CREDIT_NOTE_COLUMNS = """
    c.credit_note_id, c.number, c.invoice_id, i.number AS invoice_number, i.sponsor_id,
    c.reason, c.currency, c.total_minor, c.issued_at, c.issue_date"""


async def insert_credit_note(
    conn: Connection,
    *,
    number: str,
    invoice_id: int,
    reason: str,
    currency: str,
    total_minor: int,
    issued_at: datetime,
    issue_date: date,
    lines: Sequence[tuple[int, int]],
) -> None:
    """The credit note and its (line_no, amount_minor) lines."""
    cur = await conn.execute(
        """
        INSERT INTO credit_notes (number, invoice_id, reason, currency, total_minor, issued_at,
                                  issue_date)
        VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING credit_note_id
        """,
        (number, invoice_id, reason, currency, total_minor, issued_at, issue_date),
    )
    row = await cur.fetchone()
    assert row is not None
    async with conn.cursor() as lines_cur:
        await lines_cur.executemany(
            "INSERT INTO credit_note_lines (credit_note_id, invoice_id, line_no, amount_minor)"
            " VALUES (%s, %s, %s, %s)",
            [(row[0], invoice_id, line_no, amount) for line_no, amount in lines],
        )


async def credit_notes(
    conn: Connection, *, invoice_id: int | None = None, number: str | None = None
) -> list[CreditNoteRow]:
    """The credit notes of an invoice (oldest first), or one by number."""
    condition, param = (
        ("c.invoice_id = %s", invoice_id) if invoice_id is not None else ("c.number = %s", number)
    )
    async with conn.cursor(row_factory=class_row(CreditNoteRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_CREDIT_NOTE_COLUMNS} FROM credit_notes c
              JOIN invoices i ON i.invoice_id = c.invoice_id
             WHERE {condition} ORDER BY c.credit_note_id
            """,
            (param,),
        )
        return await cur.fetchall()


async def credit_note_lines(
    conn: Connection, credit_note_ids: Sequence[int]
) -> list[CreditNoteLineRow]:
    async with conn.cursor(row_factory=class_row(CreditNoteLineRow)) as cur:
        await cur.execute(
            """
            SELECT c.credit_note_id, c.line_no, l.line_id, c.amount_minor
              FROM credit_note_lines c
              JOIN invoice_lines l ON l.invoice_id = c.invoice_id AND l.line_no = c.line_no
             WHERE c.credit_note_id = ANY (%s) ORDER BY c.credit_note_id, c.line_no
            """,
            (list(credit_note_ids),),
        )
        return await cur.fetchall()


async def sponsor_currencies(conn: Connection, sponsor_id: UUID) -> list[str]:
    """The currencies of the sponsor's policies (for an invoice of a period without usage)."""
    cur = await conn.execute(
        "SELECT DISTINCT currency FROM policies WHERE sponsor_id = %s ORDER BY 1", (sponsor_id,)
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def platform_currency(conn: Connection) -> str:
    """The currency of the latest tariff."""
    cur = await conn.execute("SELECT currency FROM tariffs ORDER BY effective_from DESC LIMIT 1")
    row = await cur.fetchone()
    return str(row[0]) if row else "CNY"
