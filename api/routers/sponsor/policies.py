"""Sponsors (automakers, map vendors, content providers): vehicles and their SIMs, who else may
sponsor them, the policies that say what you pay for, and what they have spent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import CalendarDep, ConnDep, IdempotencyKey, SponsorCaller
from api.params import Cursor, Limit
from billing.allocation import coverage
from flowbill.errors import NotFound
from flowbill.paging import DEFAULT_LIMIT, Page
from flowbill.periods import earliest_open, parse_period
from sponsors import catalogue as app_catalogue
from sponsors import price_floors
from sponsors import service as sponsors
from sponsors.schemas import (
    AlertThresholds,
    CatalogueApp,
    PartnerPublic,
    PolicyCreate,
    PolicyPublic,
    SimCapUse,
    SimPublic,
    SponsorRateCard,
    TermsChange,
    VehiclePublic,
    VehicleUpdate,
    Vin,
)

router = APIRouter(prefix="/v1/sponsor", tags=["sponsor"])

VinPath = Annotated[Vin, Path(description="The vehicle identification number (17 characters).")]
IccidPath = Annotated[str, Path(pattern=r"^[0-9]{19,20}$")]


@router.get("/catalogue")
async def catalogue(
    conn: ConnDep, _: SponsorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CatalogueApp]:
    """The apps the platform knows, with their categories, by app id. Traffic of any other
    app id is unclassified: it is the user's, and no policy can pay for it."""
    return await app_catalogue.catalogue(conn, limit=limit, cursor=cursor)


# --- Vehicles and SIMs (automakers) ----------------------------------------------------------


@router.put("/vehicles/{vin}")
async def put_vehicle(
    conn: ConnDep, caller: SponsorCaller, vin: VinPath, body: VehicleUpdate
) -> VehiclePublic:
    """Register one of your vehicles (or change it): model, fleet, owning driver and the
    SIMs fitted to it. A SIM fitted to another vehicle is refused; move it explicitly."""
    found, _ = await sponsors.put_vehicle(conn, automaker_id=caller.tenant_id, vin=vin, body=body)
    return found


@router.get("/price-floors")
async def price_floors_of_sponsor(conn: ConnDep, caller: SponsorCaller) -> SponsorRateCard:
    """The least price per MB your policies may pay now, per currency and app category: your
    contract's own floor where the operator set one, else the category's. A policy or terms
    change below it is refused (422 `price-below-floor`)."""
    return await price_floors.sponsor_rate_card(
        conn, sponsor_id=caller.tenant_id, now=datetime.now(UTC)
    )


@router.get("/vehicles")
async def list_vehicles(
    conn: ConnDep, caller: SponsorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[VehiclePublic]:
    """Your vehicles by VIN."""
    return await sponsors.vehicles(conn, automaker_id=caller.tenant_id, limit=limit, cursor=cursor)


@router.get("/vehicles/{vin}")
async def get_vehicle(conn: ConnDep, caller: SponsorCaller, vin: VinPath) -> VehiclePublic:
    """One of your vehicles."""
    return await sponsors.vehicle(conn, automaker_id=caller.tenant_id, vin=vin)


@router.get("/sims")
async def list_sims(
    conn: ConnDep, caller: SponsorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[SimPublic]:
    """The SIMs fitted to your vehicles, by ICCID."""
    return await sponsors.sims(conn, automaker_id=caller.tenant_id, limit=limit, cursor=cursor)


@router.get("/sims/{iccid}/coverage")
async def sim_coverage(conn: ConnDep, caller: SponsorCaller, iccid: IccidPath) -> dict[str, Any]:
    """The coverage last sent to one of your SIMs: who pays for each app now, and which apps
    are blocked (the same document as the retained MQTT message)."""
    owned = await sponsors.sim_views(conn, [iccid])
    if iccid not in owned or owned[iccid].automaker_id != caller.tenant_id:
        raise NotFound(f"no SIM {iccid} on your vehicles")
    found = await coverage.current(conn, iccid)
    if found is None:
        raise NotFound(f"no coverage computed yet for {iccid}")
    return found


# --- Partnerships ----------------------------------------------------------------------------


@router.put("/partners/{sponsor_id}", status_code=status.HTTP_204_NO_CONTENT)
async def allow_sponsor(conn: ConnDep, caller: SponsorCaller, sponsor_id: UUID) -> Response:
    """Let another sponsor (a map vendor, a music provider) pay for your vehicles' traffic:
    only then may its policies name your vehicles."""
    await sponsors.allow_sponsor(conn, automaker_id=caller.tenant_id, sponsor_id=sponsor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/partners/{sponsor_id}", status_code=status.HTTP_204_NO_CONTENT)
async def disallow_sponsor(conn: ConnDep, caller: SponsorCaller, sponsor_id: UUID) -> Response:
    """Withdraw that permission. Its existing terms run on; it cannot add new ones."""
    await sponsors.disallow_sponsor(conn, automaker_id=caller.tenant_id, sponsor_id=sponsor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/partners")
async def list_partners(
    conn: ConnDep, caller: SponsorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[PartnerPublic]:
    """The sponsors you allowed, in the order you allowed them."""
    return await sponsors.partners(conn, automaker_id=caller.tenant_id, limit=limit, cursor=cursor)


# --- Policies --------------------------------------------------------------------------------


@router.post("/policies", status_code=status.HTTP_201_CREATED)
async def create_policy(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: SponsorCaller,
    key: IdempotencyKey,
    body: PolicyCreate,
    response: Response,
) -> PolicyPublic:
    """Pay for apps or categories of traffic on a scope of vehicles, from now on.

    Policies take in priority order (lower first), each up to its per-SIM monthly cap and
    its budget; what no policy pays is the user's. `valid_from` may lie in the past back to
    the start of the earliest billing month still open: usage of that time that is not yet
    allocated is then the policy's. The unit price is at least the operator's floor for
    every category it pays for (its `categories` and its `apps`' categories) in its currency,
    else `price-below-floor` names the floor. A repeat of the Idempotency-Key returns the
    policy it created (200)."""
    now = datetime.now(UTC)
    open_since = earliest_open(now, calendar.zone, calendar.closing_days)
    found, created = await sponsors.create_policy(
        conn, sponsor_id=caller.tenant_id, key=key, body=body, now=now, open_since=open_since
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return found


@router.get("/policies")
async def list_policies(
    conn: ConnDep, caller: SponsorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[PolicyPublic]:
    """Your policies with their terms and spend, oldest first."""
    return await sponsors.policies(
        conn, sponsor_id=caller.tenant_id, now=datetime.now(UTC), limit=limit, cursor=cursor
    )


@router.get("/policies/{policy_id}")
async def get_policy(conn: ConnDep, caller: SponsorCaller, policy_id: int) -> PolicyPublic:
    """One of your policies: its terms in force, their history and what it has spent."""
    return await sponsors.policy(
        conn, sponsor_id=caller.tenant_id, policy_id=policy_id, now=datetime.now(UTC)
    )


@router.post("/policies/{policy_id}/terms")
async def change_terms(
    conn: ConnDep, caller: SponsorCaller, policy_id: int, body: TermsChange
) -> PolicyPublic:
    """New terms from `effective_from` (default now, never in the past). Usage before that
    stays allocated as it was; usage from then on follows the new terms. Their unit price is
    at least the operator's floor in force when they start (`price-below-floor`)."""
    return await sponsors.change_terms(
        conn, sponsor_id=caller.tenant_id, policy_id=policy_id, body=body, now=datetime.now(UTC)
    )


@router.post("/policies/{policy_id}/pause")
async def pause_policy(conn: ConnDep, caller: SponsorCaller, policy_id: int) -> PolicyPublic:
    """Stop paying from now on (until resumed). Pausing a paused policy changes nothing."""
    return await sponsors.set_paused(
        conn, sponsor_id=caller.tenant_id, policy_id=policy_id, paused=True,
        now=datetime.now(UTC),
    )  # fmt: skip


@router.post("/policies/{policy_id}/resume")
async def resume_policy(conn: ConnDep, caller: SponsorCaller, policy_id: int) -> PolicyPublic:
    """Pay again from now on."""
    return await sponsors.set_paused(
        conn, sponsor_id=caller.tenant_id, policy_id=policy_id, paused=False,
        now=datetime.now(UTC),
    )  # fmt: skip


@router.get("/policies/{policy_id}/caps")
async def policy_caps(
    conn: ConnDep,
    caller: SponsorCaller,
    policy_id: int,
    period: Annotated[str, Query(description="The billing month, YYYY-MM.")],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[SimCapUse]:
    """Per SIM, by ICCID, what the policy paid in a month against its cap."""
    return await sponsors.cap_use(
        conn, sponsor_id=caller.tenant_id, policy_id=policy_id, period=parse_period(period),
        limit=limit, cursor=cursor,
    )  # fmt: skip


@router.get("/alert-thresholds")
async def get_alert_thresholds(conn: ConnDep, caller: SponsorCaller) -> AlertThresholds:
    """The percentages of a SIM's cap and of a policy's budget that send you a webhook."""
    return await sponsors.alert_thresholds(conn, sponsor_id=caller.tenant_id)


@router.put("/alert-thresholds")
async def set_alert_thresholds(
    conn: ConnDep, caller: SponsorCaller, body: AlertThresholds
) -> AlertThresholds:
    """Change them (default: caps 80 % and 100 %, budgets 50 %, 80 % and 100 %)."""
    return await sponsors.set_alert_thresholds(conn, sponsor_id=caller.tenant_id, body=body)
