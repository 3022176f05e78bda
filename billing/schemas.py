"""Billing models at the API's edge: tariffs and the allocation run's progress."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from billing.rating import RoundingScope

PricePerMb = Annotated[
    Decimal, Field(ge=0, le=Decimal("99999999"), max_digits=14, decimal_places=6)
]


class TariffCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


class TariffPublic(BaseModel):
    effective_from: datetime
    currency: str
    wholesale_per_mb: Decimal
    overage_per_mb: Decimal
    rounding_unit_bytes: int
    rounding_scope: RoundingScope
    created_at: datetime


class BillingProgress(BaseModel):
    next_xid: int = Field(description="The allocation cursor: the next ingest transaction.")
    batches: int
    items_allocated: int
    backlog_items: int = Field(description="Stored items the run has not allocated yet.")
    last_batch_at: datetime | None
