"""Sponsor models at the API's edge: the catalogue, vehicles, partnerships and policies."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ingest.schemas import SimProvision

MAX_BYTES = 2**50

AppId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")]
Iccid = Annotated[str, StringConstraints(pattern=r"^[0-9]{19,20}$")]
Vin = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-HJ-NPR-Z0-9]{17}$"),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Bytes = Annotated[int, Field(gt=0, le=MAX_BYTES, description="Integer bytes (1 MB = 1,048,576).")]
UnitPrice = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("99999999"), max_digits=14, decimal_places=6,
          description="Price per MB (1,048,576 bytes) in the policy's currency, e.g. \"0.05\"."),
]  # fmt: skip
Percent = Annotated[int, Field(ge=1, le=100)]


class Category(enum.StrEnum):
    TELEMATICS = "telematics"
    BACKEND = "backend"
    NAVIGATION = "navigation"
    MAP_UPDATE = "map_update"
    TRAFFIC_INFO = "traffic_info"
    MUSIC = "music"
    FM = "fm"
    VIDEO = "video"
    WIFI_HOTSPOT = "wifi_hotspot"
    OTA = "ota"
    OTHER = "other"


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FromRow(BaseModel):
    """An answer built from a repository row (`model_validate(row)`)."""

    model_config = ConfigDict(from_attributes=True)


# --- The app catalogue (operator) ------------------------------------------------------------


class CatalogueAppUpdate(_Command):
    category: Category
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class CatalogueApp(_FromRow):
    app: str
    category: Category
    name: str
    updated_at: datetime


# --- Vehicles and SIMs (automakers) ----------------------------------------------------------


class VehicleUpdate(_Command):
    model: Label
    fleet: Label | None = None
    driver_id: UUID | None = Field(
        default=None,
        description="The driver tenant who owns it: invited, and paying from the wallet only once"
        " they accept. Naming no or another driver ends the current link (the car was sold).",
    )
    iccids: list[Iccid] = Field(
        default_factory=list,
        max_length=8,
        description="The SIMs fitted to the vehicle: each must be yours (the operator assigns"
        " SIMs to their owners).",
    )


class VehiclePublic(_FromRow):
    vin: str
    automaker_id: UUID
    model: str
    fleet: str | None
    driver_id: UUID | None = Field(description="The driver who accepted the vehicle, if any.")
    invited_driver_id: UUID | None = Field(
        default=None, description="The driver invited who has not answered yet, if any."
    )
    iccids: list[str]
    updated_at: datetime


class SimPublic(_FromRow):
    iccid: str
    vin: str
    model: str
    fleet: str | None
    driver_id: UUID | None


class VehicleInvitation(_FromRow):
    vin: str
    automaker_id: UUID = Field(description="The automaker who named you as its driver.")
    model: str
    invited_at: datetime


class SimProvisionOwned(SimProvision):
    owner_id: UUID | None = Field(
        default=None,
        description="The owner of these SIMs: an automaker (sponsor) or an IoT merchant. A SIM"
        " without an owner can be metered but not fitted to a vehicle.",
    )


class SimOwnerChange(_Command):
    owner_id: UUID | None = Field(
        description="The new owner: an automaker (sponsor) or an IoT merchant; null releases it."
    )
    effective_from: AwareDatetime | None = Field(
        default=None, description="From when (default now; never in the past)."
    )


class SimOwnerPublic(_FromRow):
    iccid: str
    effective_from: datetime
    owner_id: UUID | None
    set_at: datetime


class PartnerPublic(_FromRow):
    sponsor_id: UUID = Field(description="A sponsor you allowed to pay for your vehicles.")
    created_at: datetime = Field(description="When you allowed it.")


# --- Policies (sponsors) ---------------------------------------------------------------------


class ScopeKind(enum.StrEnum):
    AUTOMAKER = "automaker"
    MODEL = "model"
    FLEET = "fleet"
    SIMS = "sims"


class Scope(_Command):
    kind: ScopeKind
    automaker_id: UUID = Field(
        description="Whose vehicles: your own, or an automaker that lets you sponsor them."
    )
    model: Label | None = None
    fleet: Label | None = None
    iccids: list[Iccid] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _shape(self) -> Scope:
        if (self.kind == ScopeKind.MODEL) != (self.model is not None):
            raise ValueError("`model` is given exactly when the scope's kind is model")
        if (self.kind == ScopeKind.FLEET) != (self.fleet is not None):
            raise ValueError("`fleet` is given exactly when the scope's kind is fleet")
        if (self.kind == ScopeKind.SIMS) != bool(self.iccids):
            raise ValueError("`iccids` are given exactly when the scope's kind is sims")
        if len(set(self.iccids)) != len(self.iccids):
            raise ValueError("`iccids` lists an ICCID twice")
        return self


class TermsSpec(_Command):
    """What a policy pays for, from `effective_from` on."""

    scope: Scope
    apps: list[AppId] = Field(default_factory=list, max_length=500)
    categories: list[Category] = Field(default_factory=list, max_length=20)
    priority: int = Field(default=100, ge=0, le=1_000_000, description="Lower takes first.")
    cap_bytes: Bytes | None = Field(
        default=None, description="Most bytes paid per SIM per billing month; none: no cap."
    )
    unit_price: UnitPrice
    valid_from: AwareDatetime | None = Field(default=None, description="Default: now.")
    valid_until: AwareDatetime | None = Field(default=None, description="None: for life.")

    @model_validator(mode="after")
    def _shape(self) -> TermsSpec:
        if not self.apps and not self.categories:
            raise ValueError("name at least one app or category")
        if len(set(self.apps)) != len(self.apps):
            raise ValueError("`apps` lists an app twice")
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            raise ValueError("`valid_until` must be after `valid_from`")
        return self


class PolicyCreate(TermsSpec):
    name: Name
    budget_bytes: Bytes | None = None
    budget_minor: int | None = Field(
        default=None, gt=0, le=10**15, description="Budget in minor units (fen for CNY)."
    )
    currency: Currency = "CNY"

    @model_validator(mode="after")
    def _one_budget(self) -> PolicyCreate:
        if self.budget_bytes is not None and self.budget_minor is not None:
            raise ValueError("give a budget in bytes or in money, not both")
        return self


class TermsChange(TermsSpec):
    effective_from: AwareDatetime | None = Field(
        default=None, description="When the new terms start; default now; never in the past."
    )


class TermsPublic(_FromRow):
    effective_from: datetime
    scope: Scope
    apps: list[str]
    categories: list[str]
    priority: int
    cap_bytes: int | None
    unit_price: Decimal
    valid_from: datetime
    valid_until: datetime | None
    paused: bool
    created_at: datetime


class PolicySpend(BaseModel):
    used_bytes: int
    used_money: Decimal = Field(description="Exact, before any statement rounding.")
    budget_left_bytes: int | None = Field(description="At the current terms' price.")


class PolicyPublic(_FromRow):
    policy_id: int
    sponsor_id: UUID
    name: str
    budget_bytes: int | None
    budget_minor: int | None
    currency: str
    created_at: datetime
    terms: TermsPublic = Field(description="The terms in force now (or the next ones).")
    history: list[TermsPublic]
    spend: PolicySpend


class SimCapUse(_FromRow):
    iccid: str
    used_bytes: int
    cap_bytes: int | None


class AlertThresholds(_Command):
    cap_percents: list[Percent] = Field(default=[80, 100], max_length=10)
    budget_percents: list[Percent] = Field(default=[50, 80, 100], max_length=10)


# --- The rate card (operator) ----------------------------------------------------------------


class PriceFloorSet(_Command):
    min_unit_price: UnitPrice = Field(
        description='The least price per MB (1,048,576 bytes) a policy may pay, e.g. "0.01".'
    )
    effective_from: AwareDatetime | None = Field(
        default=None,
        description="When it applies to new policies and terms; default now; never in the past.",
    )


class PriceFloorPublic(_FromRow):
    floor_id: int
    currency: str
    category: Category
    sponsor_id: UUID | None = Field(description="One sponsor's floor; null: every sponsor's.")
    min_unit_price: Decimal | None = Field(
        description="Price per MB; null: the sponsor's own floor ended, the category's applies."
    )
    effective_from: datetime
    created_at: datetime


class SponsorRateCard(BaseModel):
    """The floors that hold one sponsor now."""

    as_of: datetime
    floors: list[PriceFloorPublic] = Field(
        description="Per currency and category, the least price per MB a policy may pay: the "
        "sponsor's own floor where it has one, else the category's. A category without a floor "
        "in a currency takes no policy in that currency."
    )
