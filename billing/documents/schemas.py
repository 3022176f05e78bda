"""Tariff, statement, invoice, credit-note, revenue-share and margin models at the API's edge.

Money is integer minor units (`*_minor`) with the same amount as a decimal string in major
units beside it; unit prices, percents and MB are decimal strings; bytes are integers.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    model_validator,
)

from billing.documents.rating import RoundingScope, format_major
from flowbill.periods import format_period

InvoiceNumber = Annotated[str, StringConstraints(pattern=r"^FB-[0-9]{4}-[0-9]{6,9}$")]
CreditNoteNumber = Annotated[str, StringConstraints(pattern=r"^CN-[0-9]{4}-[0-9]{6,9}$")]
AppId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Percent = Annotated[
    Decimal,
    Field(gt=0, le=100, max_digits=7, decimal_places=4, description="0 < percent <= 100."),
]


def _period_text(value: object) -> object:
    return format_period(value) if isinstance(value, date) else value


# A period as the API writes it, YYYY-MM; rows hold it as the date of its first day.
PeriodText = Annotated[str, BeforeValidator(_period_text)]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- Tariffs --------------------------------------------------------------------------------

PricePerMb = Annotated[
    Decimal, Field(ge=0, le=Decimal("99999999"), max_digits=14, decimal_places=6)
]


class TariffCreate(_Command):
    effective_from: AwareDatetime | None = Field(
        default=None, description="When it applies; default now; never in the past."
    )
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "CNY"
    wholesale_per_mb: PricePerMb = Field(description="What the carrier charges per MB.")
    overage_per_mb: PricePerMb = Field(description="What a user pays per MB of overage.")
    rounding_unit_bytes: int = Field(
        default=1024, ge=1, le=1024**3, description="Bytes are rounded up to this unit..."
    )
    rounding_scope: RoundingScope = Field(
        default=RoundingScope.ITEM, description="...per usage item, or per statement line."
    )


class TariffPublic(_FromRow):
    effective_from: datetime
    currency: str
    wholesale_per_mb: Decimal
    overage_per_mb: Decimal
    rounding_unit_bytes: int
    rounding_scope: RoundingScope
    created_at: datetime


class StatementStatus(enum.StrEnum):
    OPEN = "open"
    CLOSABLE = "closable"
    INVOICED = "invoiced"


class CurrencyTotal(BaseModel):
    currency: str
    bytes: int
    rated_bytes: int
    amount_minor: int
    amount: str
    adjustment_minor: int = Field(description="Part of the amount on adjustment lines.")


# --- Sponsor statements -------------------------------------------------------------------


class SponsorStatementLine(BaseModel):
    line_id: str = Field(description="Stable id of the line: drill down with it.")
    policy_id: int
    policy_name: str
    terms_from: datetime = Field(description="The policy terms whose unit price applies.")
    category: str
    adjustment: bool = Field(description="Usage of an earlier, already closed period.")
    used_in: str | None = Field(description="For adjustments: the period of use (YYYY-MM).")
    tariff_from: datetime = Field(description="The tariff whose rounding rule applies.")
    items: int = Field(description="Allocation rows (usage items) behind the line.")
    bytes: int
    rated_bytes: int = Field(description="Bytes after the tariff's rounding rule.")
    mb: Decimal = Field(description="Rated MB, three decimals (display).")
    unit_price: Decimal = Field(description="Per MB, in the currency.")
    currency: str
    amount_minor: int = Field(description="Rated MB × unit price, rounded half-up once.")
    amount: str


class SponsorStatement(BaseModel):
    sponsor_id: UUID
    period: str
    time_zone: str
    status: StatementStatus
    closable_at: datetime = Field(description="From when the period may be invoiced.")
    invoice_number: str | None
    lines: list[SponsorStatementLine]
    totals: list[CurrencyTotal]


class DrillDownItem(_FromRow):
    window_start: datetime
    window_end: datetime | None = Field(description="From the device report (None if purged).")
    iccid: str
    boot: int
    seq: int
    app: str
    bytes: int = Field(description="Bytes of the item allocated to this line's payer.")
    received_at: datetime | None
    batch_id: int


# --- Driver statements --------------------------------------------------------------------


class DriverStatementLine(BaseModel):
    iccid: str
    category: str
    adjustment: bool
    used_in: str | None
    tariff_from: datetime
    wallet_bytes: int = Field(description="Paid from the wallet's data.")
    overage_bytes: int = Field(description="Not covered by sponsors or the wallet.")
    overage_rated_bytes: int
    overage_mb: Decimal
    overage_price: Decimal = Field(description="The tariff's overage price per MB.")
    currency: str
    overage_minor: int
    overage_amount: str


class DriverStatement(BaseModel):
    driver_id: UUID
    period: str
    time_zone: str
    status: StatementStatus = Field(description="`open` while usage may still be booked.")
    wallet_bytes: int
    overage_bytes: int
    lines: list[DriverStatementLine]
    totals: list[CurrencyTotal] = Field(description="Overage amounts per currency.")


# --- Invoices and credit notes ------------------------------------------------------------


class _DocumentLine(_FromRow):
    """A line of an issued document: its amount in minor units, and as a decimal string in major
    units of the document's currency."""

    line_no: int
    line_id: str
    amount_minor: int
    # The document's currency, which the document states once: it only formats `amount`.
    currency: str = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount(self) -> str:
        return format_major(self.amount_minor, self.currency)


class InvoiceLinePublic(_DocumentLine):
    policy_id: int
    policy_name: str
    terms_from: datetime
    category: str
    adjustment: bool
    used_in: PeriodText | None
    tariff_from: datetime
    items: int
    bytes: int
    rated_bytes: int
    mb: Decimal
    unit_price: Decimal
    credited_minor: int = Field(description="Credited on this line by credit notes so far.")


class InvoiceSummary(_FromRow):
    number: str
    sponsor_id: UUID
    period: PeriodText
    currency: str
    bytes: int
    total_minor: int
    credited_minor: int
    issued_at: datetime
    issue_date: date

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> str:
        return format_major(self.total_minor, self.currency)

    @computed_field(description="Total less credit notes.")  # type: ignore[prop-decorator]
    @property
    def balance_minor(self) -> int:
        return self.total_minor - self.credited_minor


class InvoicePublic(InvoiceSummary):
    time_zone: str
    lines: list[InvoiceLinePublic]


class CreditLineCreate(_Command):
    line_no: int = Field(ge=1, le=1_000_000)
    amount_minor: int = Field(gt=0, le=10**15)


class CreditNoteCreate(_Command):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    lines: list[CreditLineCreate] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_credit_per_line(self) -> CreditNoteCreate:
        numbers = [line.line_no for line in self.lines]
        if len(set(numbers)) != len(numbers):
            raise ValueError("each line_no at most once per credit note")
        return self


class CreditNoteLinePublic(_DocumentLine):
    """What a credit note takes off one of the invoice's lines."""


class CreditNotePublic(_FromRow):
    number: str
    invoice_number: str
    sponsor_id: UUID
    reason: str
    currency: str
    total_minor: int
    issued_at: datetime
    issue_date: date
    lines: list[CreditNoteLinePublic]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> str:
        return format_major(self.total_minor, self.currency)


# --- Revenue share --------------------------------------------------------------------------


class RevenueShareRuleCreate(_Command):
    partner_id: UUID = Field(description="Any tenant: an app maker, a handset maker.")
    name: Name
    apps: list[AppId] = Field(min_length=1, max_length=100)
    percent: Percent
    valid_from: datetime
    valid_until: datetime | None = None

    @model_validator(mode="after")
    def _valid_span(self) -> RevenueShareRuleCreate:
        if self.valid_from.tzinfo is None or (
            self.valid_until is not None and self.valid_until.tzinfo is None
        ):
            raise ValueError("times need a time zone (e.g. 2026-11-01T00:00:00+08:00)")
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if len(set(self.apps)) != len(self.apps):
            raise ValueError("each app at most once")
        return self


class RevenueShareRuleUpdate(_Command):
    name: Name | None = None
    valid_until: datetime | None = Field(
        default=None, description="End the rule (or extend it); null: no end."
    )

    @model_validator(mode="after")
    def _aware(self) -> RevenueShareRuleUpdate:
        if self.valid_until is not None and self.valid_until.tzinfo is None:
            raise ValueError("valid_until needs a time zone")
        return self


class RevenueShareRulePublic(_FromRow):
    rule_id: int
    partner_id: UUID
    name: str
    apps: list[str]
    percent: Decimal
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime
    updated_at: datetime


class RevenueShareLine(BaseModel):
    rule_id: int
    app: str
    adjustment: bool
    used_in: str | None
    tariff_from: datetime
    overage_bytes: int = Field(description="User-paid bytes: overage of a known driver.")
    rated_bytes: int
    overage_price: Decimal
    currency: str
    revenue_minor: int = Field(description="The revenue base: rated MB × overage price.")
    revenue: str
    percent: Decimal
    share_minor: int = Field(description="Exact revenue × percent / 100, rounded half-up once.")
    share: str
    wallet_bytes: int = Field(description="Wallet-paid bytes of the app (no share: see docs).")


class ShareTotal(BaseModel):
    currency: str
    revenue_minor: int
    share_minor: int
    share: str


class RevenueShareStatement(BaseModel):
    partner_id: UUID
    period: str
    time_zone: str
    status: StatementStatus
    lines: list[RevenueShareLine]
    totals: list[ShareTotal]


# --- Margin ---------------------------------------------------------------------------------


class MarginLine(BaseModel):
    currency: str
    sponsor_revenue_minor: int
    user_overage_revenue_minor: int
    wholesale_cost_minor: int
    revenue_share_minor: int
    margin_minor: int = Field(
        description="sponsor revenue + user overage revenue − wholesale cost − revenue share"
    )
    margin: str


class MarginBytes(BaseModel):
    sponsor: int
    wallet: int
    overage: int
    overage_without_driver: int = Field(description="Overage of SIMs no driver owns: unbilled.")
    total: int


class MarginReport(BaseModel):
    period: str
    time_zone: str
    status: StatementStatus
    bytes: MarginBytes
    currencies: list[MarginLine]
