"""How far the allocation run has come: the operator's view of its cursor and backlog."""

from __future__ import annotations

from billing.allocation import repository
from billing.allocation.schemas import BillingProgress
from flowbill.db import Connection


async def progress(conn: Connection) -> BillingProgress:
    """Where the allocation run is, and how much stored usage it has not reached yet."""
    return BillingProgress.model_validate(await repository.progress(conn))
