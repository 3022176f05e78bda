"""The operator's billing desk: close a sponsor's period (issue its invoice), credit notes,
any sponsor's or driver's statement, revenue-share rules and statements, the margin report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import CalendarDep, ConnDep, IdempotencyKey, OperatorCaller, ledger_key
from api.params import Cursor, Limit, LineIdPath, PeriodPath
from api.responses import CSV_RESPONSES, csv_response
from billing.documents import invoices, margin, revenue_share, statements
from billing.documents.schemas import (
    CreditNoteCreate,
    CreditNoteNumber,
    CreditNotePublic,
    DrillDownItem,
    DriverStatement,
    InvoiceNumber,
    InvoicePublic,
    InvoiceSummary,
    MarginReport,
    RevenueShareRuleCreate,
    RevenueShareRulePublic,
    RevenueShareRuleUpdate,
    RevenueShareStatement,
    SponsorStatement,
)
from flowbill.db import Connection
from flowbill.paging import DEFAULT_LIMIT, Page
from flowbill.periods import Calendar
from tenants.schemas import Role

router = APIRouter(prefix="/v1/operator/billing", tags=["operator"])

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/sponsors/{sponsor_id}/periods/{period}/close", status_code=status.HTTP_201_CREATED)
async def close_period(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: OperatorCaller,
    key: IdempotencyKey,
    sponsor_id: UUID,
    period: PeriodPath,
) -> InvoicePublic:
    """Close a sponsor's month: issue its invoice, numbered `FB-<year>-<n>` without gaps,
    with the statement's lines as they are now. Closing again answers with the same invoice.
    Before the month's closing window has passed: `409 period-not-closable` (with
    `closable_at`)."""
    now = datetime.now(UTC)
    return await invoices.close_period(
        conn,
        sponsor_id=sponsor_id,
        period=calendar.started(period, now=now),
        key=ledger_key(caller, "close", key),
        calendar=calendar,
        now=now,
    )


@router.get(
    "/sponsors/{sponsor_id}/statements/{period}.csv",
    response_class=Response,
    responses=CSV_RESPONSES,
)
async def sponsor_statement_csv(
    conn: ConnDep, calendar: CalendarDep, _: OperatorCaller, sponsor_id: UUID, period: PeriodPath
) -> Response:
    """A sponsor's statement as CSV."""
    found = await _sponsor_statement(conn, calendar, sponsor_id, period)
    return csv_response(
        statements.statement_csv(found), filename=f"statement-{sponsor_id}-{found.period}.csv"
    )


@router.get("/sponsors/{sponsor_id}/statements/{period}")
async def sponsor_statement(
    conn: ConnDep, calendar: CalendarDep, _: OperatorCaller, sponsor_id: UUID, period: PeriodPath
) -> SponsorStatement:
    """A sponsor's statement of a month, as the sponsor sees it."""
    return await _sponsor_statement(conn, calendar, sponsor_id, period)


async def _sponsor_statement(
    conn: Connection, calendar: Calendar, sponsor_id: UUID, period: str
) -> SponsorStatement:
    now = datetime.now(UTC)
    month = calendar.started(period, now=now)
    await statements.require_tenant(conn, sponsor_id, Role.SPONSOR)
    return await statements.sponsor_statement(
        conn, sponsor_id=sponsor_id, period=month, calendar=calendar, now=now
    )


@router.get("/sponsors/{sponsor_id}/statements/{period}/lines/{line_id}/items")
async def sponsor_line_items(
    conn: ConnDep,
    calendar: CalendarDep,
    _: OperatorCaller,
    sponsor_id: UUID,
    period: PeriodPath,
    line_id: LineIdPath,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DrillDownItem]:
    """The usage items behind a line of a sponsor's statement, in item order; follow
    `next_cursor` for the next page."""
    now = datetime.now(UTC)
    month = calendar.started(period, now=now)
    await statements.require_tenant(conn, sponsor_id, Role.SPONSOR)
    return await statements.line_items(
        conn,
        sponsor_id=sponsor_id,
        period=month,
        line=line_id,
        cursor=cursor,
        limit=limit,
        calendar=calendar,
    )


@router.get("/drivers/{driver_id}/statements/{period}")
async def driver_statement(
    conn: ConnDep, calendar: CalendarDep, _: OperatorCaller, driver_id: UUID, period: PeriodPath
) -> DriverStatement:
    """A driver's statement of a month, as the driver sees it."""
    now = datetime.now(UTC)
    month = calendar.started(period, now=now)
    await statements.require_tenant(conn, driver_id, Role.DRIVER)
    return await statements.driver_statement(
        conn, driver_id=driver_id, period=month, calendar=calendar, now=now
    )


@router.get("/invoices")
async def list_invoices(
    conn: ConnDep,
    calendar: CalendarDep,
    _: OperatorCaller,
    sponsor_id: UUID | None = None,
    period: Annotated[str | None, Query(max_length=20, description="YYYY-MM")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[InvoiceSummary]:
    """Invoices, newest first, optionally of one sponsor or month."""
    month = calendar.started(period, now=datetime.now(UTC)) if period is not None else None
    return await invoices.invoices(
        conn, sponsor_id=sponsor_id, period=month, cursor=cursor, limit=limit
    )


@router.get("/invoices/{number}")
async def get_invoice(
    conn: ConnDep, _: OperatorCaller, number: Annotated[InvoiceNumber, Path()]
) -> InvoicePublic:
    """An invoice with its lines as issued and what was credited on each."""
    return await invoices.invoice(conn, number=number, sponsor_id=None)


@router.post("/invoices/{number}/credit-notes", status_code=status.HTTP_201_CREATED)
async def issue_credit_note(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: OperatorCaller,
    key: IdempotencyKey,
    number: Annotated[InvoiceNumber, Path()],
    body: CreditNoteCreate,
) -> CreditNotePublic:
    """Correct an invoice: credit amounts (minor units) of its lines, numbered
    `CN-<year>-<n>`. A line is never credited beyond what is left on it
    (`409 credit-exceeds-line`, with `left_minor`). The invoice itself never changes."""
    return await invoices.issue_credit_note(
        conn,
        invoice_number=number,
        request=body,
        key=ledger_key(caller, "credit-note", key),
        calendar=calendar,
        now=datetime.now(UTC),
    )


@router.get("/invoices/{number}/credit-notes")
async def invoice_credit_notes(
    conn: ConnDep,
    _: OperatorCaller,
    number: Annotated[InvoiceNumber, Path()],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[CreditNotePublic]:
    """The credit notes of an invoice, oldest first."""
    return await invoices.credit_notes_of(
        conn, invoice_number=number, sponsor_id=None, cursor=cursor, limit=limit
    )


@router.get("/credit-notes/{number}")
async def get_credit_note(
    conn: ConnDep, _: OperatorCaller, number: Annotated[CreditNoteNumber, Path()]
) -> CreditNotePublic:
    """One credit note."""
    return await invoices.credit_note(conn, number=number, sponsor_id=None)


@router.get("/revenue-share/rules")
async def share_rules(
    conn: ConnDep,
    _: OperatorCaller,
    partner_id: UUID | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[RevenueShareRulePublic]:
    """Revenue-share rules in id order, optionally of one partner."""
    return await revenue_share.rules(conn, partner_id=partner_id, cursor=cursor, limit=limit)


@router.post("/revenue-share/rules", status_code=status.HTTP_201_CREATED)
async def create_share_rule(
    conn: ConnDep, _: OperatorCaller, body: RevenueShareRuleCreate
) -> RevenueShareRulePublic:
    """Give a partner tenant (an app maker, a handset maker) a percentage (0 < p ≤ 100) of
    the user-paid traffic revenue of the listed apps, for usage from `valid_from` until
    `valid_until` (or without end). One partner has one rule per app at a time."""
    return await revenue_share.create_rule(conn, body)


@router.get("/revenue-share/rules/{rule_id}")
async def share_rule(conn: ConnDep, _: OperatorCaller, rule_id: RuleId) -> RevenueShareRulePublic:
    """One revenue-share rule."""
    return await revenue_share.rule(conn, rule_id)


@router.patch("/revenue-share/rules/{rule_id}")
async def change_share_rule(
    conn: ConnDep, _: OperatorCaller, rule_id: RuleId, body: RevenueShareRuleUpdate
) -> RevenueShareRulePublic:
    """Rename a rule, or end or extend it with `valid_until`: from now on only, since its
    past is fixed (`409 revenue-share-rule-history-fixed`). Percent and apps never change:
    end the rule and create another."""
    return await revenue_share.update_rule(
        conn, rule_id=rule_id, change=body, now=datetime.now(UTC)
    )


@router.delete("/revenue-share/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_share_rule(conn: ConnDep, _: OperatorCaller, rule_id: RuleId) -> Response:
    """Delete a rule that has not started yet (one that has is ended with `valid_until`)."""
    await revenue_share.delete_rule(conn, rule_id=rule_id, now=datetime.now(UTC))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/revenue-share/partners/{partner_id}/statements/{period}")
async def share_statement(
    conn: ConnDep, calendar: CalendarDep, _: OperatorCaller, partner_id: UUID, period: PeriodPath
) -> RevenueShareStatement:
    """A partner's revenue-share statement of a month: per rule, app and tariff, the
    user-paid bytes, the revenue base, the percent and the share (half-up once per line)."""
    now = datetime.now(UTC)
    return await revenue_share.statement(
        conn,
        partner_id=partner_id,
        period=calendar.started(period, now=now),
        calendar=calendar,
        now=now,
    )


@router.get("/margin/{period}")
async def margin_report(
    conn: ConnDep, calendar: CalendarDep, _: OperatorCaller, period: PeriodPath
) -> MarginReport:
    """The platform's margin of a month, per currency: sponsor revenue plus user overage
    revenue, less the carrier's wholesale cost of every allocated byte and the revenue share
    paid out."""
    now = datetime.now(UTC)
    return await margin.margin_report(
        conn, period=calendar.started(period, now=now), calendar=calendar, now=now
    )
