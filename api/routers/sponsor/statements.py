"""Sponsors' statements and invoices: what each policy's traffic cost, line by line, down to
the device reports; the invoices of closed periods and their credit notes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from api.deps import CalendarDep, ConnDep, require_role
from api.params import Cursor, Limit, LineIdPath, PeriodPath
from api.responses import CSV_RESPONSES, csv_response
from billing.documents import invoices, statements
from billing.documents.schemas import (
    CreditNoteNumber,
    CreditNotePublic,
    DrillDownItem,
    InvoiceNumber,
    InvoicePublic,
    InvoiceSummary,
    SponsorStatement,
)
from flowbill.paging import DEFAULT_LIMIT, Page
from tenants.schemas import Role
from tenants.service import Caller

router = APIRouter(prefix="/v1/sponsor", tags=["sponsor"])

SponsorCaller = Annotated[Caller, Depends(require_role(Role.SPONSOR))]


@router.get("/statements/{period}.csv", response_class=Response, responses=CSV_RESPONSES)
async def statement_csv(
    conn: ConnDep, calendar: CalendarDep, caller: SponsorCaller, period: PeriodPath
) -> Response:
    """Your statement as CSV (UTF-8, a header row; columns are listed in docs/billing.md)."""
    now = datetime.now(UTC)
    statement = await statements.sponsor_statement(
        conn,
        sponsor_id=caller.tenant_id,
        period=calendar.started(period, now=now),
        calendar=calendar,
        now=now,
    )
    return csv_response(
        statements.statement_csv(statement), filename=f"statement-{statement.period}.csv"
    )


@router.get("/statements/{period}")
async def statement(
    conn: ConnDep, calendar: CalendarDep, caller: SponsorCaller, period: PeriodPath
) -> SponsorStatement:
    """Your statement of a month: one line per policy, terms (unit price), category and
    tariff, with bytes, MB, unit price and amount (rounded half-up once per line);
    adjustments (late usage of closed months) on lines of their own. While `status` is
    `open`, usage may still be booked in the month."""
    now = datetime.now(UTC)
    return await statements.sponsor_statement(
        conn,
        sponsor_id=caller.tenant_id,
        period=calendar.started(period, now=now),
        calendar=calendar,
        now=now,
    )


@router.get("/statements/{period}/lines/{line_id}/items")
async def line_items(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: SponsorCaller,
    period: PeriodPath,
    line_id: LineIdPath,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DrillDownItem]:
    """The usage items behind a statement line with their device reports (ICCID, boot, seq,
    window) and the bytes allocated to you, in item order; follow `next_cursor` for the next
    page (a cursor of another line is refused)."""
    now = datetime.now(UTC)
    return await statements.line_items(
        conn,
        sponsor_id=caller.tenant_id,
        period=calendar.started(period, now=now),
        line=line_id,
        cursor=cursor,
        limit=limit,
        calendar=calendar,
    )


@router.get("/invoices")
async def list_invoices(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: SponsorCaller,
    period: Annotated[str | None, Query(max_length=20, description="YYYY-MM")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[InvoiceSummary]:
    """Your invoices, newest first (of one month with `period`)."""
    now = datetime.now(UTC)
    month = calendar.started(period, now=now) if period is not None else None
    return await invoices.invoices(
        conn, sponsor_id=caller.tenant_id, period=month, cursor=cursor, limit=limit
    )


@router.get("/invoices/{number}")
async def get_invoice(
    conn: ConnDep, caller: SponsorCaller, number: Annotated[InvoiceNumber, Path()]
) -> InvoicePublic:
    """One of your invoices, with its lines as issued and what credit notes took off each."""
    return await invoices.invoice(conn, number=number, sponsor_id=caller.tenant_id)


@router.get("/invoices/{number}/credit-notes")
async def invoice_credit_notes(
    conn: ConnDep,
    caller: SponsorCaller,
    number: Annotated[InvoiceNumber, Path()],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[CreditNotePublic]:
    """The credit notes of one of your invoices, oldest first."""
    return await invoices.credit_notes_of(
        conn, invoice_number=number, sponsor_id=caller.tenant_id, cursor=cursor, limit=limit
    )


@router.get("/credit-notes/{number}")
async def get_credit_note(
    conn: ConnDep, caller: SponsorCaller, number: Annotated[CreditNoteNumber, Path()]
) -> CreditNotePublic:
    """One credit note of your invoices."""
    return await invoices.credit_note(conn, number=number, sponsor_id=caller.tenant_id)
