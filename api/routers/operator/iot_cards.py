"""The operator's side of IoT cards: import card batches from carriers, assign blocks to
merchants, set wholesale plans, settle open work with the outside parties, run the sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, status

from api.deps import (
    CalendarDep,
    ConnDep,
    DeviceIssuerDep,
    GatewaysDep,
    IotGatewaysDep,
    KeyGate,
    OperatorCaller,
    PoolDep,
    SettingsDep,
)
from api.params import Cursor, Limit
from devices import service as devices
from devices.schemas import CardImportWithCredentials, CredentialKind
from flowbill.errors import InvalidInput
from flowbill.paging import DEFAULT_LIMIT, Page
from iot_cards import settlement
from iot_cards.schemas import (
    AssignmentReport,
    CardAssignment,
    ReconcileReport,
    SweepReport,
    WholesalePlanCreate,
    WholesalePlanPublic,
    WholesalePlanUpdate,
)
from iot_cards.service import inventory, usage
from sponsors import ownership

router = APIRouter(prefix="/v1/operator/iot", tags=["iot cards: operator"])


async def _csv_batch(request: Request, _: KeyGate) -> bytes:
    # Read as a stream before a database connection is taken (a slow upload holds none); the
    # body limit (FLOWBILL_REQUEST_IMPORT_BODY_MAX_BYTES, api/limits.py) stops it when too long.
    chunks = [chunk async for chunk in request.stream()]
    return b"".join(chunks)


@router.post(
    "/card-imports",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_cards(
    raw: Annotated[bytes, Depends(_csv_batch)],
    conn: ConnDep,
    caller: OperatorCaller,
    issuer: DeviceIssuerDep,
    carrier: Annotated[str, Query(pattern=r"^[a-z0-9-]{2,40}$")],
    label: Annotated[str, Query(max_length=200)] = "",
    owner_id: UUID | None = None,
    device_credentials: Annotated[
        CredentialKind | None,
        Query(description="Also issue each card's device credential of this kind (shown once)."),
    ] = None,
) -> CardImportWithCredentials:
    """Import a carrier's card batch as CSV (`iccid,imsi,msisdn` header, one card a line).
    ICCIDs need a valid Luhn digit; duplicates in the file or with known cards are errors.
    A batch with any bad row is refused whole, each bad row named by line and reason.
    With `owner_id` (an IoT merchant or an automaker) the cards are that tenant's SIMs from
    now on; otherwise they are owned when a block is assigned to a merchant. With
    `device_credentials`, every card gets its device identity in the same transaction."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the batch is not UTF-8 text") from exc
    report, iccids = await inventory.import_cards(
        conn, csv_text=text, carrier=carrier, label=label, operator_id=caller.tenant_id
    )
    now = datetime.now(UTC)
    if owner_id is not None:
        await ownership.assign_provisioned(conn, iccids, owner_id=owner_id, now=now)
    issued = []
    if device_credentials is not None:
        issued = await devices.issue_many(conn, issuer, iccids, kind=device_credentials, now=now)
    return CardImportWithCredentials(**report.model_dump(), device_credentials=issued)


@router.post("/card-assignments")
async def assign(conn: ConnDep, _: OperatorCaller, body: CardAssignment) -> AssignmentReport:
    """Give a merchant a block of unassigned cards, first to last ICCID: all or nothing.
    The merchant owns their SIMs from now on; a block with a card another tenant owns is
    refused whole (409 `sim-owned-by-another`)."""
    report, iccids = await inventory.assign_cards(conn, body)
    await ownership.assign_provisioned(
        conn, iccids, owner_id=body.merchant_id, now=datetime.now(UTC)
    )
    return report


@router.post("/plans", status_code=status.HTTP_201_CREATED)
async def create_plan(
    conn: ConnDep, _: OperatorCaller, body: WholesalePlanCreate
) -> WholesalePlanPublic:
    """A wholesale plan: data per month for some months (or a one-month top-up) at a price."""
    return await inventory.create_plan(conn, body)


@router.get("/plans")
async def plans(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[WholesalePlanPublic]:
    """Every wholesale plan, on sale or withdrawn, oldest first, a page at a time."""
    return await inventory.list_plans(conn, cursor=cursor, limit=limit)


@router.patch("/plans/{plan_id}")
async def change_plan(
    conn: ConnDep, _: OperatorCaller, plan_id: UUID, body: WholesalePlanUpdate
) -> WholesalePlanPublic:
    """Withdraw a plan from sale, or offer it again."""
    return await inventory.set_plan_active(conn, plan_id=plan_id, active=body.active)


@router.post("/reconciliations")
async def reconcile(
    _: OperatorCaller,
    pool: PoolDep,
    gateways: GatewaysDep,
    iot_gateways: IotGatewaysDep,
    settings: SettingsDep,
    calendar: CalendarDep,
) -> ReconcileReport:
    """Settle payments, refunds, invoices and verifications left open past the grace time
    by asking the parties (run it periodically)."""
    return await settlement.reconcile(
        pool,
        payments=gateways,
        invoicer=iot_gateways,
        identity=iot_gateways,
        now=datetime.now(UTC),
        grace=timedelta(seconds=settings.reconcile_grace_seconds),
        calendar=calendar,
    )


@router.post("/sweeps")
async def sweep(conn: ConnDep, _: OperatorCaller, calendar: CalendarDep) -> SweepReport:
    """Apply due scheduled card commands and judge every card's usage: thresholds crossed,
    cards blocked or unblocked (run it periodically)."""
    return await usage.sweep(conn, now=datetime.now(UTC), calendar=calendar)
