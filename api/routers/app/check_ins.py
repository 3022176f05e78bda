"""The check-in tool, for apps that embed it: one check-in per user and calendar day."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import AppCaller, CalendarDep, ConnDep
from wallet import promotions
from wallet.schemas import CheckInRequest, CheckInResult, CheckInRulesPublic

router = APIRouter(prefix="/v1/check-ins", tags=["check-in"])


@router.post("")
async def check_in(
    conn: ConnDep, calendar: CalendarDep, caller: AppCaller, body: CheckInRequest
) -> CheckInResult:
    """Check a user in for today (a calendar day in the billing time zone).

    The first check-in of a day grants data from merchants' check-in campaigns (never from
    the app); a second one the same day grants nothing (`already_checked_in: true`). Days in
    a row earn more, a missed day restarts the streak.
    """
    return await promotions.check_in(
        conn, app_id=caller.tenant_id, user_id=body.user_id, now=datetime.now(UTC),
        calendar=calendar,
    )  # fmt: skip


@router.get("/rules")
async def rules(conn: ConnDep, _: AppCaller) -> CheckInRulesPublic:
    """What each day of a streak is worth."""
    return await promotions.check_in_rules_public(conn)
