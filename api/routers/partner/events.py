"""Partner platforms: service vendors that run promotions for many merchants report the actions
users take (favourite a shop, share a link, add to cart, buy)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import ConnDep, PartnerCaller
from wallet import promotions
from wallet.schemas import ActionEvent, ActionEventResult

router = APIRouter(prefix="/v1/partner", tags=["partner"])


@router.post("/action-events")
async def action_event(
    conn: ConnDep, caller: PartnerCaller, body: ActionEvent
) -> ActionEventResult:
    """Report a user's action for a campaign of a merchant you act for.

    The reward is granted once per `event_id`, however often the event is delivered: a
    repeat answers with what the first delivery granted (`repeated: true`). Refusals name
    their reason: `campaign-ended`, `budget-spent`, `user-limit-reached`, `unknown-user`.
    """
    return await promotions.record_action(
        conn, partner_id=caller.tenant_id, event=body, now=datetime.now(UTC)
    )
