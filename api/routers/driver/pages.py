"""The driver page: per vehicle and SIM this month's usage by app and by day, stacked by who
paid, the blocked apps; the wallet's balance, lots and history; forms to top up a phone
number and to redeem a catalogue item, through the same services (and validation) as the
API. Server-rendered; the charts are drawn by a vendored library from the tables' numbers."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.deps import (
    ConnDep,
    GatewaysDep,
    PoolDep,
    SettingsDep,
    after_response,
    callback_url,
    ledger_key,
    providers,
)
from api.web import pages, sessions
from api.web.i18n import Translator
from api.web.sessions import WebSession
from api.web.templating import render
from billing.allocation import coverage, usage_views
from billing.allocation.usage_views import SimMonth
from flowbill.db import Connection
from flowbill.errors import FlowbillError, InvalidInput
from flowbill.paging import MAX_LIMIT
from flowbill.periods import Calendar, next_month, parse_period
from flowbill.settings import Settings
from flowbill.units import MB
from sponsors import ownership
from sponsors import service as sponsors
from sponsors.schemas import Vin
from tenants.service import Caller
from wallet import exchange, reports, withdrawals
from wallet.schemas import ExchangeOrderRequest, TopUpRequest

router = APIRouter(prefix="/driver", include_in_schema=False)

Iccid = Annotated[str, Path(pattern=r"^[0-9]{19,20}$")]
Month = Annotated[str | None, Query(max_length=7)]
# As the API's Idempotency-Key header.
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
HISTORY_LINES = 20


@dataclass(frozen=True, slots=True)
class SimView:
    iccid: str
    usage: SimMonth
    coverage: dict[str, Any] | None
    chart: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VehicleView:
    vin: str
    model: str
    sims: list[SimView]


def _month(text: str | None, calendar: Calendar) -> date:
    current = calendar.period_of(datetime.now(UTC))
    if not text:
        return current
    try:
        return parse_period(text)
    except InvalidInput:
        return current


def _previous(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def _chart(usage: SimMonth, t: Translator) -> dict[str, Any]:
    """The numbers the chart script draws (MB), the same as the tables'."""

    def series(lines: list[usage_views.UsageLine]) -> list[dict[str, Any]]:
        return [
            {"label": _payer_label(p, t),
             "data": [round(line.by_payer.get(p.key, 0) / MB, 2) for line in lines]}
            for p in usage.payers
        ]  # fmt: skip

    return {
        "unit": "MB",
        "me_last": bool(usage.payers) and usage.payers[-1].kind == usage_views.ME,
        "apps": {"labels": [a.label for a in usage.apps], "series": series(usage.apps)},
        "days": {
            "labels": [t.day(date.fromisoformat(d.label), year=False) for d in usage.days],
            "series": series(usage.days),
        },
    }


def _payer_label(payer: usage_views.Payer, t: Translator) -> str:
    return t("me") if payer.kind == usage_views.ME else (payer.name or payer.key)


async def _vehicles(
    conn: Connection, session: WebSession, t: Translator, *, month: date, only: str | None
) -> list[VehicleView]:
    owned = await sponsors.vehicles_of_driver(conn, session.tenant_id)
    iccids = [i for v in owned for i in v.iccids if only is None or i == only]
    usage = {u.iccid: u for u in await usage_views.sim_months(conn, iccids, month=month)}
    views = []
    for vehicle in owned:
        sims = [
            SimView(i, usage[i], await coverage.current(conn, i), _chart(usage[i], t))
            for i in vehicle.iccids
            if i in usage
        ]
        if sims:
            views.append(VehicleView(vehicle.vin, vehicle.model, sims))
    return views


async def _page(
    request: Request,
    conn: Connection,
    settings: Settings,
    session: WebSession,
    *,
    started: float,
    month_text: str | None,
    only: str | None = None,
    problem: dict[str, Any] | None = None,
    posted: dict[str, str] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    t = pages.translator(request, settings)
    calendar = Calendar.from_settings(settings)
    month = _month(month_text, calendar)
    user = str(session.tenant_id)
    now = datetime.now(UTC)
    vehicles = await _vehicles(conn, session, t, month=month, only=only)
    here = request.url.path if request.method == "GET" else "/driver"
    if only is not None and not vehicles:
        return _not_found(t, started)
    context = {
        "session": session,
        "month": month,
        "previous_month": _previous(month),
        "next_month": next_month(month) if next_month(month) <= calendar.period_of(now) else None,
        "vehicles": vehicles,
        "invitations": await ownership.pending_invitations(conn, session.tenant_id),
        "only": only,
        "balance": await reports.balance(conn, user=user, now=now),
        # The page shows the first page of each list: the newest history lines, and lots,
        # carriers and items as far as anyone holds or sells them.
        "lots": (
            await reports.lots(
                conn, user=user, now=now, calendar=calendar, limit=MAX_LIMIT, cursor=None
            )
        ).items,
        "history": (await reports.history(conn, user=user, limit=HISTORY_LINES, cursor=None)).items,
        "carriers": (await withdrawals.carriers(conn, limit=MAX_LIMIT, cursor=None)).items,
        "items": (await exchange.catalogue(conn, limit=MAX_LIMIT, cursor=None)).items,
        "form_key": secrets.token_hex(16),
        "problem": problem,
        "posted": posted or {},
        "notice": notice,
        # Where links back (months, languages) lead: a form's answer stands for the page.
        "path": here,
        "here": here,
    }
    status_code = int(problem["status"]) if problem else 200
    return render("driver.html", t, context, status_code=status_code, started=started)


def _not_found(t: Translator, started: float) -> HTMLResponse:
    return render("not_found.html", t, {}, status_code=404, started=started)


async def _notice(conn: Connection, t: Translator, user: str, request: Request) -> str | None:
    """The outcome of the form just sent (the redirect after it names the order)."""
    try:
        if top_up := request.query_params.get("top_up"):
            order = await withdrawals.get_order(conn, user=user, order_id=UUID(top_up))
            return t("done_top_up", mb=order.data_mb, phone=order.phone, state=order.state)
        if redeemed := request.query_params.get("redeemed"):
            placed = await exchange.get_order(conn, order_id=UUID(redeemed), user=user)
            item = await exchange.item(conn, placed.item_id)
            return t(
                "done_redeem", quantity=placed.quantity, name=item.name,
                amount=t.mb(placed.total_bytes), state=placed.state,
            )  # fmt: skip
    except (ValueError, FlowbillError):
        return None
    return None


@router.get("")
async def driver_page(
    started: pages.Started,
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    month: Month = None,
) -> Response:
    session = await pages.current_session(request, conn)
    if session is None:
        return pages.to_sign_in(request)
    t = pages.translator(request, settings)
    notice = await _notice(conn, t, str(session.tenant_id), request)
    return await _page(
        request, conn, settings, session, started=started, month_text=month, notice=notice
    )


@router.get("/sims/{iccid}")
async def sim_page(
    started: pages.Started,
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    iccid: Iccid,
    month: Month = None,
) -> Response:
    session = await pages.current_session(request, conn)
    if session is None:
        return pages.to_sign_in(request)
    # A SIM that is not in one of the driver's vehicles is "not found", like one that
    # does not exist.
    return await _page(
        request, conn, settings, session, started=started, month_text=month, only=iccid
    )


def _caller(session: WebSession) -> Caller:
    return Caller(tenant_id=session.tenant_id, name=session.name, role=session.role, key_id="web")


def _validated(model: type[Any], values: dict[str, Any]) -> Any:
    """The API's request model from form fields, refused as the API refuses a body."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [
            {"location": ["body", *(str(p) for p in e["loc"])], "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"the request is not valid: {detail}", errors=errors) from exc


def _form_key(fields: dict[str, str]) -> str:
    key = fields.get("idempotency_key", "")
    if not _KEY.match(key):
        raise InvalidInput("the form has no valid idempotency key; reload the page")
    return key


async def _posted(request: Request, conn: Connection) -> tuple[WebSession | None, dict[str, str]]:
    return await pages.current_session(request, conn), await pages.form(request)


def _check_form(request: Request, session: WebSession, fields: dict[str, str]) -> str:
    """The form's idempotency key, once the form is known to come from this session's page."""
    if not pages.same_origin(request):
        raise sessions.CsrfMismatch("the form came from another site")
    sessions.check_csrf(session.csrf_token, fields.get("csrf"))
    return _form_key(fields)


@router.post("/top-ups")
async def top_up(
    started: pages.Started,
    request: Request,
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> Response:
    session, fields = await _posted(request, conn)
    if session is None:
        return pages.to_sign_in(request)
    try:
        key = _check_form(request, session, fields)
        body = _validated(
            TopUpRequest,
            {"carrier_id": fields.get("carrier_id", ""), "phone": fields.get("phone", "").strip(),
             "package_mb": fields.get("package_mb", "")},
        )  # fmt: skip
        # A savepoint: a refusal must leave nothing behind, though the request commits.
        async with conn.transaction():
            order, new = await withdrawals.request_top_up(
                conn, user=str(session.tenant_id), key=key, body=body, now=datetime.now(UTC)
            )
    except FlowbillError as error:
        return await _refused(request, conn, settings, session, started, error, fields)
    if new:
        background.add_task(
            after_response,
            withdrawals.submit(
                pool, gateways, order_id=order.order_id, msisdn=body.phone,
                callback_url=callback_url(settings), now=datetime.now(UTC),
            ),
            what="carrier submission",
        )  # fmt: skip
    return RedirectResponse(f"/driver?top_up={order.order_id}", status.HTTP_303_SEE_OTHER)


@router.post("/redemptions")
async def redeem(
    started: pages.Started,
    request: Request,
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> Response:
    session, fields = await _posted(request, conn)
    if session is None:
        return pages.to_sign_in(request)
    try:
        key = _check_form(request, session, fields)
        body = _validated(
            ExchangeOrderRequest,
            {"item_id": fields.get("item_id", ""), "quantity": fields.get("quantity", "1"),
             "carrier_id": fields.get("carrier_id") or None},
        )  # fmt: skip
        async with conn.transaction():
            order, to_process = await exchange.place_order(
                conn, user=str(session.tenant_id),
                key=ledger_key(_caller(session), "exchange", key), body=body,
                now=datetime.now(UTC),
            )  # fmt: skip
    except FlowbillError as error:
        return await _refused(request, conn, settings, session, started, error, fields)
    if to_process:
        background.add_task(
            after_response,
            exchange.process(
                pool, providers(settings, gateways), order_id=order.order_id, now=datetime.now(UTC)
            ),
            what="exchange order",
        )
    return RedirectResponse(f"/driver?redeemed={order.order_id}", status.HTTP_303_SEE_OTHER)


@router.post("/vehicle-invitations/{vin}/{answer}")
async def answer_invitation(
    started: pages.Started,
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    vin: Annotated[Vin, Path()],
    answer: Annotated[str, Path(pattern="^(accept|decline)$")],
) -> Response:
    session, fields = await _posted(request, conn)
    if session is None:
        return pages.to_sign_in(request)
    try:
        _check_form(request, session, fields)
        act = ownership.accept if answer == "accept" else ownership.decline
        async with conn.transaction():
            await act(conn, driver_id=session.tenant_id, vin=vin, now=datetime.now(UTC))
    except FlowbillError as error:
        return await _refused(request, conn, settings, session, started, error, fields)
    return RedirectResponse("/driver", status.HTTP_303_SEE_OTHER)


async def _refused(
    request: Request,
    conn: Connection,
    settings: Settings,
    session: WebSession,
    started: float,
    error: FlowbillError,
    fields: dict[str, str],
) -> HTMLResponse:
    """The page again, with the API's problem for the form and what was typed."""
    kept = {k: v for k, v in fields.items() if k in {"carrier_id", "package_mb", "phone",
                                                     "item_id", "quantity"}}  # fmt: skip
    return await _page(
        request, conn, settings, session, started=started, month_text=None,
        problem=error.problem(instance=request.url.path), posted=kept,
    )  # fmt: skip
