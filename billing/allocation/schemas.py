"""The allocation run's models at the API's edge."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class BillingProgress(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    next_xid: int = Field(description="The allocation cursor: the next ingest transaction.")
    batches: int
    items_allocated: int
    backlog_items: int = Field(description="Stored items the run has not allocated yet.")
    last_batch_at: datetime | None
