"""Models at the API's edge for IoT cards: imports, plans, orders, verification, cards,
usage, statements and invoices. Money is integer minor units (fen) with its currency;
data is integer bytes."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    model_validator,
)

from iot_cards.lifecycle import Command

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Iccid = Annotated[str, StringConstraints(pattern=r"^[0-9]{19,20}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Minor = Annotated[int, Field(gt=0, le=10**12)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FromRow(BaseModel):
    """A response read from a stored row: `Model.model_validate(row)`."""

    model_config = ConfigDict(from_attributes=True)


class PlanKind(enum.StrEnum):
    MONTHLY = "monthly"
    TOP_UP = "top_up"


class SellerProfile(_In):
    seller_name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
    ]
    tax_id: Annotated[
        str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=18, max_length=18)
    ]


class ImportReport(BaseModel):
    batch_id: UUID
    carrier: str
    cards: int


class CardAssignment(_In):
    merchant_id: UUID
    first_iccid: Iccid
    last_iccid: Iccid


class AssignmentReport(BaseModel):
    merchant_id: UUID
    cards: int
    first_iccid: str
    last_iccid: str


class WholesalePlanCreate(_In):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    kind: PlanKind
    data_mb: Annotated[int, Field(gt=0, le=10**7)]
    months: Annotated[int, Field(ge=1, le=36)] = 1
    wholesale_minor: Minor
    currency: Currency = "CNY"

    @model_validator(mode="after")
    def _top_ups_last_a_month(self) -> WholesalePlanCreate:
        if self.kind is PlanKind.TOP_UP and self.months != 1:
            raise ValueError("a top-up lasts for the month it is bought in: months must be 1")
        return self


class WholesalePlanUpdate(_In):
    active: bool


class WholesalePlanPublic(_FromRow):
    plan_id: UUID
    name: str
    kind: PlanKind
    data_bytes: int
    months: int
    wholesale_minor: int
    currency: str
    active: bool
    created_at: datetime


class MerchantPlanSet(_In):
    retail_minor: Minor
    pooled: bool = False
    on_sale: bool = True


class MerchantPlanPublic(_FromRow):
    plan_id: UUID
    name: str
    kind: PlanKind
    data_bytes: int
    months: int
    currency: str
    wholesale_minor: int
    retail_minor: int
    pooled: bool
    on_sale: bool

    @computed_field  # type: ignore[prop-decorator]
    @property
    def margin_minor(self) -> int:
        """What you keep of each sale: retail − wholesale."""
        return self.retail_minor - self.wholesale_minor


class StorePlan(_FromRow):
    plan_id: UUID
    name: str
    kind: PlanKind
    data_bytes: int
    months: int
    retail_minor: int
    currency: str


class StorePublic(BaseModel):
    merchant_id: UUID
    seller_name: str
    cards_in_stock: int
    plans: list[StorePlan]


class InvoiceTitle(_In):
    invoice_title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    invoice_tax_id: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, to_upper=True, min_length=18, max_length=18),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _tax_id_needs_a_title(self) -> InvoiceTitle:
        if self.invoice_tax_id is not None and self.invoice_title is None:
            raise ValueError("a company's tax id comes with its invoice title")
        return self


class PurchaseCreate(InvoiceTitle):
    merchant_id: UUID
    plan_id: UUID


class RechargeCreate(InvoiceTitle):
    plan_id: UUID


class OrderPublic(_FromRow):
    order_id: UUID
    kind: Literal["purchase", "recharge"]
    merchant_id: UUID
    iccid: str
    plan_id: UUID
    plan_name: str
    data_bytes: int
    months: int
    retail_minor: int
    currency: str
    state: str
    reason: str | None
    created_at: datetime
    paid_at: datetime | None


class MerchantOrderPublic(OrderPublic):
    buyer_id: UUID
    wholesale_minor: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def revenue_minor(self) -> int:
        """Your share of the order: retail − wholesale."""
        return self.retail_minor - self.wholesale_minor


class VerificationRequest(_In):
    name: Annotated[str, StringConstraints(max_length=200)]
    id_number: Annotated[str, StringConstraints(max_length=40)]
    phone: Annotated[str, StringConstraints(max_length=40)]


class VerificationPublic(_FromRow):
    verification_id: UUID
    iccid: str
    state: Literal["pending", "verified", "rejected"]
    reason: str | None
    name_masked: str
    id_masked: str
    phone_masked: str
    submitted_at: datetime
    settled_at: datetime | None


class ImeiBody(_In):
    imei: Annotated[str, StringConstraints(strip_whitespace=True, max_length=40)]


class CardCommand(_In):
    command: Command
    effective_at: datetime | None = Field(
        default=None,
        description="When the change takes effect: now when left out; a past time records "
        "a change made earlier; a future time schedules it.",
    )
    reason: Text = ""


class HistoryEntry(_FromRow):
    command: str
    from_state: str | None
    to_state: str | None
    actor: str
    reason: str
    effective_at: datetime
    applied_at: datetime | None
    status: str


class CardPublic(_FromRow):
    iccid: str
    imsi: str
    msisdn: str
    merchant_id: UUID | None
    state: str
    block_reasons: list[str]
    suspended_by: str | None
    holder_id: UUID | None
    plan_id: UUID | None
    imei: str | None
    activated_at: datetime | None
    state_changed_at: datetime


class CardDetail(CardPublic):
    allowed_commands: list[str]
    verification: VerificationPublic | None
    history: list[HistoryEntry]


class AppUsage(BaseModel):
    app: str
    up_bytes: int
    down_bytes: int


class UsagePublic(BaseModel):
    iccid: str
    period: str = Field(description="The calendar month in the billing time zone, YYYY-MM.")
    period_start: datetime
    period_end: datetime
    quota_bytes: int
    used_bytes: int
    remaining_bytes: int
    pooled: bool
    pool_cards: int
    pool_used_bytes: int
    pool_quota_bytes: int
    by_app: list[AppUsage]


class ThresholdCreate(_In):
    percent: Annotated[int, Field(ge=1, le=100)] | None = None
    mb: Annotated[int, Field(gt=0, le=10**7)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ThresholdCreate:
        if (self.percent is None) == (self.mb is None):
            raise ValueError("give either percent or mb")
        return self


class ThresholdPublic(_FromRow):
    threshold_id: UUID
    percent: int | None
    bytes: int | None
    created_at: datetime


class StatementLine(BaseModel):
    order_id: UUID
    kind: str
    iccid: str
    plan_name: str
    at: datetime
    retail_minor: int
    wholesale_minor: int
    revenue_minor: int


class StatementTotals(BaseModel):
    orders: int
    refunds: int
    gross_minor: int
    wholesale_minor: int
    revenue_minor: int


class StatementPublic(BaseModel):
    merchant_id: UUID
    month: str
    currency: str
    sales: list[StatementLine]
    refunds: list[StatementLine] = Field(description="Refunds settled this month, negative.")
    totals: StatementTotals


class RefundRequest(_In):
    reason: Text = ""


class RefundPublic(_FromRow):
    refund_id: UUID
    order_id: UUID
    amount_minor: int
    reason: str
    state: str
    failure: str | None
    created_at: datetime
    settled_at: datetime | None


class InvoicePublic(_FromRow):
    invoice_id: UUID
    order_id: UUID
    colour: Literal["blue", "red"]
    state: Literal["pending", "issued"]
    number: str | None
    original_invoice_id: UUID | None
    issued_at: datetime | None
    document: dict[str, object]


class BuyerPublic(_FromRow):
    buyer_id: UUID
    cards: int
    orders: int
    name_masked: str | None
    first_order_at: datetime


class ReconcileReport(BaseModel):
    payments: int
    refunds: int
    invoices: int
    verifications: int


class SweepReport(BaseModel):
    scheduled_applied: int
    scheduled_skipped: int
    cards_evaluated: int
    blocked: int
    unblocked: int
    alerts: int


class UsageAlert(_FromRow):
    """A usage threshold a card (or a merchant's pool) crossed: one webhook to the merchant."""

    alert_id: int
    merchant_id: UUID
    event_type: Literal["card.usage_threshold_reached"] = "card.usage_threshold_reached"
    subject: str = Field(description="An ICCID, or pool:<plan id> for a pooled plan.")
    iccids: list[str]
    threshold_id: UUID
    percent: int | None
    bytes: int | None
    period: date
    used_bytes: int
    quota_bytes: int
    crossed_at: datetime
