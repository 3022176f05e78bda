"""SQL of invoices and credit notes: gap-free document numbers, idempotent commands, the
documents and their lines (stored once, never changed: the database refuses it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


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
    # Not a column: the service fills them in from `invoice_lines`.
    lines: list[InvoiceLineRow] = field(default_factory=list)


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
    """Newest first (by id: numbers are taken in commit order), before `before_id`."""
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
    currency: str
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
            SELECT {", ".join("l." + f for f in _LINE_FIELDS)}, i.currency,
                   (SELECT coalesce(sum(c.amount_minor), 0) FROM credit_note_lines c
                     WHERE c.invoice_id = l.invoice_id AND c.line_no = l.line_no)::bigint
                       AS credited_minor
              FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id
             WHERE l.invoice_id = %s ORDER BY l.line_no
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
    # Not a column: the service fills them in from `credit_note_lines`.
    lines: list[CreditNoteLineRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CreditNoteLineRow:
    credit_note_id: int
    line_no: int
    line_id: str
    amount_minor: int
    currency: str


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
    conn: Connection,
    *,
    invoice_id: int | None = None,
    number: str | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[CreditNoteRow]:
    """The credit notes of an invoice, oldest first (after `after_id`, at most `limit`), or
    one by number."""
    condition, param = (
        ("c.invoice_id = %s", invoice_id) if invoice_id is not None else ("c.number = %s", number)
    )
    async with conn.cursor(row_factory=class_row(CreditNoteRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_CREDIT_NOTE_COLUMNS} FROM credit_notes c
              JOIN invoices i ON i.invoice_id = c.invoice_id
             WHERE {condition} AND (%s::bigint IS NULL OR c.credit_note_id > %s)
             ORDER BY c.credit_note_id LIMIT %s
            """,
            (param, after_id, after_id, limit),
        )
        return await cur.fetchall()


async def credit_note_lines(
    conn: Connection, credit_note_ids: Sequence[int]
) -> list[CreditNoteLineRow]:
    async with conn.cursor(row_factory=class_row(CreditNoteLineRow)) as cur:
        await cur.execute(
            """
            SELECT c.credit_note_id, c.line_no, l.line_id, c.amount_minor, n.currency
              FROM credit_note_lines c
              JOIN invoice_lines l ON l.invoice_id = c.invoice_id AND l.line_no = c.line_no
              JOIN credit_notes n ON n.credit_note_id = c.credit_note_id
             WHERE c.credit_note_id = ANY (%s) ORDER BY c.credit_note_id, c.line_no
            """,
            (list(credit_note_ids),),
        )
        return await cur.fetchall()
