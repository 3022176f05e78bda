"""The operator's side of IoT cards: import card batches from carriers, assign blocks to
merchants, set wholesale plans, settle open work with the outside parties, run the sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, status

from api.deps import (
    CalendarDep,
    ConnDep,
    DeviceIssuerDep,
    GatewaysDep,
    IotGatewaysDep,
    OperatorCaller,
    PoolDep,
    SettingsDep,
)
from api.params import Cursor, Limit
from devices import service as devices
from devices.schemas import CardImportWithCredentials, CredentialKind
from flowbill.errors import InvalidInput
from flowbill.paging import DEFAULT_LIMIT, Page
from flowbill.units import MB
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

router = APIRouter(prefix="/v1/operator/iot", tags=["iot cards: operator"])

MAX_IMPORT_BYTES = 10 * MB


@router.post(
    "/card-imports",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_cards(
    request: Request,
    conn: ConnDep,
    caller: OperatorCaller,
    issuer: DeviceIssuerDep,
    carrier: Annotated[str, Query(pattern=r"^[a-z0-9-]{2,40}$")],
    label: Annotated[str, Query(max_length=200)] = "",
    device_credentials: Annotated[
        CredentialKind | None,
        Query(description="Also issue each card's device credential of this kind (shown once)."),
    ] = None,
) -> CardImportWithCredentials:
    """Import a carrier's card batch as CSV (`iccid,imsi,msisdn` header, one card a line).
    ICCIDs need a valid Luhn digit; duplicates in the file or with known cards are errors.
    A batch with any bad row is refused whole, each bad row named by line and reason. With
    `device_credentials`, every card gets its device identity in the same transaction."""
    raw = await request.body()
    if len(raw) > MAX_IMPORT_BYTES:
        raise InvalidInput(f"a batch is at most {MAX_IMPORT_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the batch is not UTF-8 text") from exc
    report = await inventory.import_cards(
        conn, csv_text=text, carrier=carrier, label=label, operator_id=caller.tenant_id
    )
    issued = []
    if device_credentials is not None:
        iccids = await inventory.batch_iccids(conn, report.batch_id)
        now = datetime.now(UTC)
        issued = await devices.issue_many(conn, issuer, iccids, kind=device_credentials, now=now)
    return CardImportWithCredentials(**report.model_dump(), device_credentials=issued)


@router.post("/card-assignments")
async def assign(conn: ConnDep, _: OperatorCaller, body: CardAssignment) -> AssignmentReport:
    """Give a merchant a block of unassigned cards, first to last ICCID: all or nothing."""
    return await inventory.assign_cards(conn, body)


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
