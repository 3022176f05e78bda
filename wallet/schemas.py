"""Wallet models at the API's edge: what callers send and what they get back."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    field_validator,
    model_validator,
)

from flowbill.units import MB

# The largest single amount anyone may ask for: 1 PiB, or 10^15 minor units.
MAX_BYTES = 2**50
MAX_MB = MAX_BYTES // MB

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
Bytes = Annotated[int, Field(gt=0, le=MAX_BYTES, description="Integer bytes (1 MB = 1,048,576).")]


class Action(enum.StrEnum):
    FAVOURITE_SHOP = "favourite_shop"
    SHARE_LINK = "share_link"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    CHECK_IN = "check_in"


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FromRow(BaseModel):
    """An answer built from a repository row with `model_validate(row)`."""

    # Answers always carry every field, defaulted ones too: the schema says so.
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )


# --- Operator configuration ---------------------------------------------------------------


class DataPrice(_FromRow):
    currency: Currency
    minor_per_100mb: int = Field(description="Minor units (fen for CNY) per 100 MB.")
    updated_at: datetime


class DataPriceUpdate(_Command):
    minor_per_100mb: int = Field(gt=0, le=10**9, description="Minor units per 100 MB.")


class CheckInRulesPublic(_FromRow):
    cycle_days: int
    daily_bytes: int
    streak_bytes: dict[int, int] = Field(description="Day of the cycle → bytes on that day.")
    validity_days: int
    updated_at: datetime


class CheckInRulesUpdate(_Command):
    cycle_days: int = Field(ge=1, le=366)
    daily_bytes: Bytes
    streak_bytes: dict[Annotated[int, Field(ge=1, le=366)], Bytes] = Field(default_factory=dict)
    validity_days: int = Field(default=730, ge=1, le=730)

    @model_validator(mode="after")
    def _days_within_cycle(self) -> CheckInRulesUpdate:
        outside = [day for day in self.streak_bytes if day > self.cycle_days]
        if outside:
            raise ValueError(f"streak days {outside} are outside the {self.cycle_days}-day cycle")
        return self


# --- Merchants: pool and campaigns -------------------------------------------------------


class DataPurchase(_Command):
    mb: int = Field(ge=100, le=MAX_MB, description="Whole MB to buy; at least 100.")
    currency: Currency = "CNY"


class DataPurchased(BaseModel):
    txn_id: int
    data_bytes: int
    price_minor: int
    currency: str


class PoolPublic(BaseModel):
    data_bytes: int = Field(description="Data in the pool, not yet given to a campaign.")
    in_campaigns_bytes: int = Field(description="Budgets of campaigns not yet granted.")


class CampaignCreate(_Command):
    name: Name
    action: Action
    bytes_per_action: Bytes
    bytes_per_click: int = Field(
        default=0, ge=0, le=MAX_BYTES, description="share_link: what the clicker receives."
    )
    per_user_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    validity_days: int = Field(default=730, ge=1, le=730)
    budget_bytes: Bytes
    starts_at: datetime | None = Field(default=None, description="Default: now.")
    ends_at: datetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CampaignCreate:
        if self.bytes_per_click and self.action is not Action.SHARE_LINK:
            raise ValueError("bytes_per_click is for share_link campaigns only")
        for moment in (self.starts_at, self.ends_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a UTC offset")
        if self.ends_at and self.starts_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class CampaignPublic(_FromRow):
    campaign_id: UUID
    name: str
    action: Action
    bytes_per_action: int
    bytes_per_click: int
    per_user_limit: int | None
    validity_days: int
    budget_bytes: int
    budget_left_bytes: int
    users_rewarded: int
    starts_at: datetime
    ends_at: datetime | None
    ended_at: datetime | None
    running: bool


# --- Partners: action events -------------------------------------------------------------


class ActionEvent(_Command):
    event_id: EventId = Field(description="The partner's id of this event: granted once.")
    campaign_id: UUID
    action: Action
    user_id: UUID = Field(description="The user who acted (for share_link: who shared).")
    clicked_by: UUID | None = Field(
        default=None, description="share_link: the user who clicked the shared link."
    )

    @model_validator(mode="after")
    def _share_has_clicker(self) -> ActionEvent:
        if self.action is Action.CHECK_IN:
            raise ValueError("check-ins come through the check-in API, not as events")
        if self.action is Action.SHARE_LINK:
            if self.clicked_by is None:
                raise ValueError("a share_link event names who clicked (clicked_by)")
            if self.clicked_by == self.user_id:
                raise ValueError("a user cannot click their own shared link")
        elif self.clicked_by is not None:
            raise ValueError("clicked_by is for share_link events only")
        return self


class Reward(BaseModel):
    user_id: UUID
    role: str = Field(description="actor, or clicker for share_link.")
    data_bytes: int
    lot_id: int | None
    expires_at: datetime | None
    refused: str | None = Field(default=None, description="Why this user got nothing.")


class ActionEventResult(BaseModel):
    event_id: str
    campaign_id: UUID
    repeated: bool = Field(description="True when the event was already granted before.")
    rewards: list[Reward]


# --- Embedding apps: check-in ------------------------------------------------------------


class CheckInRequest(_Command):
    user_id: UUID


class CheckInResult(BaseModel):
    user_id: UUID
    day: date = Field(description="The calendar day in the billing time zone.")
    streak: int
    data_bytes: int = Field(description="Granted by this call: 0 when already checked in.")
    already_checked_in: bool
    expires_at: datetime | None
    tomorrow_bytes: int = Field(description="What checking in tomorrow would grant.")


# --- Users -------------------------------------------------------------------------------


class LotPublic(_FromRow):
    lot_id: int
    source: str
    granted_bytes: int
    remaining_bytes: int
    expires_at: datetime
    expires_on: date = Field(description="The expiry's calendar day in the billing time zone.")
    created_at: datetime


class BalancePublic(BaseModel):
    data_bytes: int
    expiring_within_30_days_bytes: int
    next_expiry: datetime | None


class HistoryEntry(_FromRow):
    txn_id: int
    kind: str
    data_bytes: int = Field(description="Signed: credits positive, debits negative.")
    at: datetime
    memo: dict[str, object]


class MerchantDataUse(_FromRow):
    user_id: str
    granted_bytes: int
    used_bytes: int
    expired_bytes: int
    remaining_bytes: int


# --- Operators: breakage and expiry ------------------------------------------------------


class BreakageLine(_FromRow):
    month: date = Field(description="First day of the month (billing time zone).")
    funder_kind: str = Field(description="merchant (a campaign or pool), or carrier.")
    funder_id: str
    data_bytes: int


class ExpiringDay(_FromRow):
    day: date
    data_bytes: int
    lots: int


class SweepResult(BaseModel):
    lots_expired: int


class BooksReport(BaseModel):
    balanced: bool
    problems: list[str]


# --- Carriers: top-ups and transfers-in --------------------------------------------------

CarrierId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")]
Msisdn = Annotated[
    str,
    StringConstraints(pattern=r"^1[3-9][0-9]{9}$"),
    Field(description="A mainland China mobile number, 11 digits."),
]


class CarrierConfig(_Command):
    name: Name
    package_mb: list[Annotated[int, Field(gt=0, le=1024 * 1024)]] = Field(
        min_length=1, max_length=50
    )
    min_package_mb: int = Field(gt=0, le=1024 * 1024)
    transfer_in: bool = False

    @model_validator(mode="after")
    def _packages_reach_the_minimum(self) -> CarrierConfig:
        if len(set(self.package_mb)) != len(self.package_mb):
            raise ValueError("package sizes must be distinct")
        if max(self.package_mb) < self.min_package_mb:
            raise ValueError("no package reaches the minimum")
        return self


class CarrierPublic(_FromRow):
    carrier_id: str
    name: str
    package_mb: list[int]
    min_package_mb: int
    transfer_in: bool

    @field_validator("package_mb")
    @classmethod
    def _smallest_first(cls, package_mb: list[int]) -> list[int]:
        return sorted(package_mb)


class TopUpRequest(_Command):
    carrier_id: CarrierId
    phone: Msisdn
    package_mb: int = Field(gt=0, le=1024 * 1024)


class TransferInRequest(_Command):
    carrier_id: CarrierId
    phone: Msisdn
    mb: int = Field(gt=0, le=100 * 1024)


class ConsentConfirmation(_Command):
    code: str = Field(
        pattern=r"^[0-9]{4,8}$", description="The one-time code the carrier texted to the line."
    )


class CarrierOrderPublic(_FromRow):
    order_id: UUID
    direction: str
    carrier_id: str
    phone: str = Field(
        description="Masked.", validation_alias=AliasChoices("phone", "msisdn_masked")
    )
    data_mb: int
    state: str = Field(
        description="awaiting_consent (a transfer-in waiting for the line's one-time code), "
        "reserved, submitted (waiting for the carrier), confirmed, failed."
    )
    reason: str | None
    lot_id: int | None
    credited_mb: int | None = Field(
        description="What a confirmed transfer-in credited: what was asked, or less if the "
        "carrier confirmed less; never more."
    )
    consent_tries: int = Field(description="Codes tried so far (a transfer-in allows 5).")
    consent_expires_at: datetime | None = Field(
        description="Until when the transfer-in's code may be confirmed."
    )
    created_at: datetime
    settled_at: datetime | None


class ReconcileReport(BaseModel):
    examined: int
    confirmed: int
    failed: int
    still_open: int


# --- The exchange ------------------------------------------------------------------------


class ItemKind(enum.StrEnum):
    RED_ENVELOPE = "red_envelope"
    PHONE_CREDIT = "phone_credit"
    MEMBERSHIP = "membership"
    FUEL_CARD = "fuel_card"
    MERCHANT_GOODS = "merchant_goods"


class CatalogueItemCreate(_Command):
    kind: ItemKind
    name: Name
    sku: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
    price_bytes: Bytes
    carrier_prices: dict[CarrierId, Bytes] = Field(
        default_factory=dict, description="MB price per carrier of the user's phone number."
    )
    price_minor: int = Field(default=0, ge=0, le=10**9, description="The money part.")
    currency: Currency = "CNY"
    merchant_id: UUID | None = Field(default=None, description="The seller of merchant goods.")
    stock: int | None = Field(default=None, ge=0, le=10**9, description="None: unlimited.")
    per_user_limit: int | None = Field(default=None, ge=1, le=10**6)

    @model_validator(mode="after")
    def _seller_for_merchant_goods(self) -> CatalogueItemCreate:
        if (self.kind is ItemKind.MERCHANT_GOODS) != (self.merchant_id is not None):
            raise ValueError("merchant goods, and only they, name their merchant_id")
        return self


class CatalogueItemUpdate(_Command):
    stock: int | None = Field(default=None, ge=0, le=10**9)
    unlimited_stock: bool = False
    active: bool | None = None


class CatalogueItemPublic(_FromRow):
    item_id: UUID
    kind: ItemKind
    name: str
    sku: str
    price_bytes: int
    carrier_prices: dict[str, int]
    price_minor: int
    currency: str
    merchant_id: UUID | None
    stock: int | None
    per_user_limit: int | None
    active: bool


class ExchangeOrderRequest(_Command):
    item_id: UUID
    quantity: int = Field(default=1, ge=1, le=100)
    carrier_id: CarrierId | None = Field(
        default=None, description="Your phone's carrier: items priced per carrier need it."
    )


class OrderEvent(_FromRow):
    state: str
    detail: str | None
    at: datetime


class ExchangeOrderPublic(_FromRow):
    order_id: UUID
    item_id: UUID
    quantity: int
    unit_bytes: int
    unit_minor: int
    currency: str
    state: str = Field(description="placed, paid, fulfilled, failed or refunded.")
    payment_state: str
    fulfilment_state: str
    reason: str | None
    voucher: str | None
    returned_quantity: int
    created_at: datetime
    # Not a column of the order's row: the service adds the order's events.
    events: list[OrderEvent] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_bytes(self) -> int:
        return self.unit_bytes * self.quantity

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_minor(self) -> int:
        return self.unit_minor * self.quantity


class ReturnRequest(_Command):
    quantity: int = Field(ge=1, le=100)
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class FulfilmentReport(_Command):
    delivered: bool
    note: Annotated[str, StringConstraints(max_length=200)] = ""
