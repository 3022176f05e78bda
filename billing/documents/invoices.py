"""Invoices and credit notes: closing a sponsor's period issues one immutable invoice whose
lines are the statement's at that moment; corrections are credit notes against its lines.

Numbers are gap-free per series and year: taken from a counter row in the transaction that
issues the document, so only committed documents hold numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import date, datetime
from uuid import UUID

from billing.allocation import batches
from billing.documents import statements
from billing.documents.errors import (
    BillingKeyReused,
    CreditExceedsLine,
    CreditNoteNotFound,
    InvalidCreditNote,
    InvoiceNotFound,
    MixedCurrencies,
    PeriodNotClosable,
)
from billing.documents.repository import invoices as repo
from billing.documents.repository import tariffs as tariff_repo
from billing.documents.schemas import (
    CreditNoteCreate,
    CreditNotePublic,
    InvoicePublic,
    InvoiceSummary,
    SponsorStatementLine,
)
from flowbill import paging, periods
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.periods import Calendar
from sponsors import service as sponsors
from tenants.schemas import Role

INVOICE_SERIES = "FB"
CREDIT_NOTE_SERIES = "CN"
_INVOICES = "invoices"
_CREDIT_NOTES = "credit-notes"


def document_number(series: str, year: int, number: int) -> str:
    """`FB-2026-000001`: the series, the year of issue, the number within the year."""
    return f"{series}-{year:04d}-{number:06d}"


def _digest(request: dict[str, object]) -> bytes:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).digest()


async def _repeat(conn: Connection, *, key: str, command: str, digest: bytes) -> str | None:
    """The document a repeated key issued, or None when the key is new (and now claimed)."""
    first = await repo.claim_command(conn, key=key, command=command, digest=digest)
    if first is None:
        return None
    if first.command != command or first.request_digest != digest:
        raise BillingKeyReused("this Idempotency-Key was used for another request")
    assert first.document_number is not None  # recorded in the same transaction as the claim
    return first.document_number


def _stored_line(line_no: int, line: SponsorStatementLine) -> repo.InvoiceLineRow:
    return repo.InvoiceLineRow(
        line_no=line_no,
        line_id=line.line_id,
        policy_id=line.policy_id,
        policy_name=line.policy_name,
        terms_from=line.terms_from,
        category=line.category,
        adjustment=line.adjustment,
        used_in=periods.parse_period(line.used_in) if line.used_in else None,
        tariff_from=line.tariff_from,
        items=line.items,
        bytes=line.bytes,
        rated_bytes=line.rated_bytes,
        mb=line.mb,
        unit_price=line.unit_price,
        amount_minor=line.amount_minor,
        currency=line.currency,
    )


async def _invoice_public(conn: Connection, row: repo.InvoiceRow) -> InvoicePublic:
    lines = await repo.invoice_lines(conn, row.invoice_id)
    return InvoicePublic.model_validate(replace(row, lines=lines))


async def invoice(conn: Connection, *, number: str, sponsor_id: UUID | None) -> InvoicePublic:
    """An invoice with its lines and what was credited on each; for a sponsor, only its own."""
    row = await repo.find_invoice(conn, number=number, sponsor_id=sponsor_id)
    if row is None:
        raise InvoiceNotFound(f"no invoice {number}")
    return await _invoice_public(conn, row)


async def invoices(
    conn: Connection,
    *,
    sponsor_id: UUID | None,
    period: date | None,
    cursor: str | None,
    limit: int,
) -> Page[InvoiceSummary]:
    """A page of invoices, newest first (of one sponsor or month, or all)."""
    before = None
    if cursor is not None:
        (before,) = paging.decode_cursor(cursor, (int,), scope=_INVOICES)
    rows = await repo.list_invoices(
        conn, sponsor_id=sponsor_id, period=period, before_id=before, limit=limit + 1
    )
    found = paging.page(rows, limit=limit, key=lambda row: (row.invoice_id,), scope=_INVOICES)
    return Page[InvoiceSummary](
        items=[InvoiceSummary.model_validate(row) for row in found.items],
        next_cursor=found.next_cursor,
    )


async def close_period(
    conn: Connection,
    *,
    sponsor_id: UUID,
    period: date,
    key: str,
    calendar: Calendar,
    now: datetime,
) -> InvoicePublic:
    """Close a sponsor's period: issue its invoice (or return the one already issued).

    Refused with `period-not-closable` until the period's closing window has passed: until
    then late usage may still be booked in it."""
    await statements.require_tenant(conn, sponsor_id, Role.SPONSOR)
    text = periods.format_period(period)
    closable = calendar.closable_at(period)
    if now < closable:
        raise PeriodNotClosable(
            f"{text} may be closed from {closable.isoformat()}, when its closing window ends",
            period=text,
            closable_at=closable.isoformat(),
        )
    digest = _digest({"sponsor_id": str(sponsor_id), "period": text})
    repeated = await _repeat(conn, key=key, command="close", digest=digest)
    if repeated is not None:
        return await invoice(conn, number=repeated, sponsor_id=None)

    # Wait for an allocation batch under way: it may have started before the closing window
    # ended and book into this period. Batches after this one see a later clock.
    await batches.wait_for_batches(conn)
    await repo.lock_invoice_slot(conn, sponsor_id=sponsor_id, period=period)
    existing = await repo.find_invoice(conn, sponsor_id=sponsor_id, period=period)
    if existing is not None:
        number = existing.number
    else:
        number = await _issue_invoice(
            conn, sponsor_id=sponsor_id, period=period, calendar=calendar, now=now
        )
    await repo.record_command(conn, key=key, document_number=number)
    return await invoice(conn, number=number, sponsor_id=None)


async def _issue_invoice(
    conn: Connection, *, sponsor_id: UUID, period: date, calendar: Calendar, now: datetime
) -> str:
    lines = await statements.sponsor_statement_lines(
        conn, sponsor_id=sponsor_id, period=period, calendar=calendar
    )
    currencies = sorted({line.currency for line in lines})
    if len(currencies) > 1:
        raise MixedCurrencies(
            "an invoice has one currency; this statement has " + ", ".join(currencies),
            currencies=currencies,
        )
    if not currencies:
        # Nothing used: the invoice (for nothing) still closes the period, in the currency
        # of the sponsor's policies when they agree on one.
        currencies = await sponsors.policy_currencies(conn, sponsor_id)
        if len(currencies) != 1:
            currencies = [await tariff_repo.platform_currency(conn)]
    issue_date = calendar.day_of(now)
    sequence = await repo.next_number(conn, series=INVOICE_SERIES, year=issue_date.year)
    number = document_number(INVOICE_SERIES, issue_date.year, sequence)
    invoice_id = await repo.insert_invoice(
        conn,
        number=number,
        sponsor_id=sponsor_id,
        period=period,
        time_zone=calendar.time_zone,
        currency=currencies[0],
        data_bytes=sum(line.bytes for line in lines),
        total_minor=sum(line.amount_minor for line in lines),
        issued_at=now,
        issue_date=issue_date,
    )
    await repo.insert_invoice_lines(
        conn,
        invoice_id=invoice_id,
        lines=[_stored_line(n, line) for n, line in enumerate(lines, start=1)],
    )
    return number


# --- Credit notes -------------------------------------------------------------------------


async def _credit_notes_public(
    conn: Connection, rows: list[repo.CreditNoteRow]
) -> list[CreditNotePublic]:
    by_note: dict[int, list[repo.CreditNoteLineRow]] = {row.credit_note_id: [] for row in rows}
    for line in await repo.credit_note_lines(conn, list(by_note)):
        by_note[line.credit_note_id].append(line)
    return [
        CreditNotePublic.model_validate(replace(row, lines=by_note[row.credit_note_id]))
        for row in rows
    ]


async def credit_note(
    conn: Connection, *, number: str, sponsor_id: UUID | None
) -> CreditNotePublic:
    """One credit note; for a sponsor, only one of its own invoices'."""
    rows = await repo.credit_notes(conn, number=number)
    if not rows or (sponsor_id is not None and rows[0].sponsor_id != sponsor_id):
        raise CreditNoteNotFound(f"no credit note {number}")
    return (await _credit_notes_public(conn, rows))[0]


async def credit_notes_of(
    conn: Connection,
    *,
    invoice_number: str,
    sponsor_id: UUID | None,
    cursor: str | None,
    limit: int,
) -> Page[CreditNotePublic]:
    """A page of the credit notes of an invoice, oldest first."""
    found = await repo.find_invoice(conn, number=invoice_number, sponsor_id=sponsor_id)
    if found is None:
        raise InvoiceNotFound(f"no invoice {invoice_number}")
    after = None
    if cursor is not None:
        (after,) = paging.decode_cursor(cursor, (int,), scope=_CREDIT_NOTES)
    rows = await repo.credit_notes(
        conn, invoice_id=found.invoice_id, after_id=after, limit=limit + 1
    )
    notes = paging.page(
        rows, limit=limit, key=lambda row: (row.credit_note_id,), scope=_CREDIT_NOTES
    )
    return Page[CreditNotePublic](
        items=await _credit_notes_public(conn, notes.items), next_cursor=notes.next_cursor
    )


async def issue_credit_note(
    conn: Connection,
    *,
    invoice_number: str,
    request: CreditNoteCreate,
    key: str,
    calendar: Calendar,
    now: datetime,
) -> CreditNotePublic:
    """Credit amounts of an invoice's lines, never more than is left on a line."""
    digest = _digest(
        {
            "invoice": invoice_number,
            "reason": request.reason,
            "lines": [[line.line_no, line.amount_minor] for line in request.lines],
        }
    )
    repeated = await _repeat(conn, key=key, command="credit-note", digest=digest)
    if repeated is not None:
        return await credit_note(conn, number=repeated, sponsor_id=None)

    # The row lock serialises credit notes of one invoice: "left to credit" stays true.
    found = await repo.find_invoice(conn, number=invoice_number, lock=True)
    if found is None:
        raise InvoiceNotFound(f"no invoice {invoice_number}")
    lines = {line.line_no: line for line in await repo.invoice_lines(conn, found.invoice_id)}
    for wanted in request.lines:
        line = lines.get(wanted.line_no)
        if line is None:
            raise InvalidCreditNote(
                f"invoice {invoice_number} has no line {wanted.line_no}", line_no=wanted.line_no
            )
        left = line.amount_minor - line.credited_minor
        if wanted.amount_minor > left:
            raise CreditExceedsLine(
                f"line {wanted.line_no} has {left} minor units left to credit",
                line_no=wanted.line_no,
                left_minor=left,
            )
    issue_date = calendar.day_of(now)
    sequence = await repo.next_number(conn, series=CREDIT_NOTE_SERIES, year=issue_date.year)
    number = document_number(CREDIT_NOTE_SERIES, issue_date.year, sequence)
    await repo.insert_credit_note(
        conn,
        number=number,
        invoice_id=found.invoice_id,
        reason=request.reason,
        currency=found.currency,
        total_minor=sum(line.amount_minor for line in request.lines),
        issued_at=now,
        issue_date=issue_date,
        lines=[(line.line_no, line.amount_minor) for line in request.lines],
    )
    await repo.record_command(conn, key=key, document_number=number)
    return await credit_note(conn, number=number, sponsor_id=None)
