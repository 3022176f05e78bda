"""IoT cards sold by merchants: inventory, plans and prices, orders, real-name verification,
the card lifecycle as commands, usage against the plan, statements and invoices.

Services take a connection and never commit: the caller owns the transaction. Talking to the
payment, identity-check and invoicing parties happens outside it (see `settlement`).
Personal data: a buyer's name, ID number and phone are checked here, hashed (the ID number,
with a keyed HMAC) and masked, and never stored, returned or logged in full.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from flowbill import metrics
from flowbill.db import Connection
from flowbill.units import MB
from ingest import service as ingest
from ingest.protocol import is_valid_iccid
from iot_cards import idcheck, invoices, repository
from iot_cards.errors import (
    BuyerNotFound,
    CardNotActivated,
    CardNotFound,
    CardsNotFree,
    IdempotencyKeyReused,
    IdLimitReached,
    ImportRejected,
    InvalidEffectiveTime,
    InvalidImei,
    InvalidTaxId,
    InvoiceNotFound,
    InvoicePending,
    MerchantNotFound,
    NotRefundable,
    NotVerified,
    OrderNotFound,
    OrderNotPaid,
    OutOfStock,
    PlanNotFound,
    PlanNotOffered,
    PriceBelowWholesale,
    ProfileRequired,
    ThresholdNotFound,
    TransitionNotAllowed,
    WrongPlanKind,
)
from iot_cards.lifecycle import (
    HOLDER_COMMANDS,
    MERCHANT_COMMANDS,
    Actor,
    Command,
    State,
    can,
    target,
)
from iot_cards.lifecycle import allowed as lifecycle_allowed
from iot_cards.repository import CardRow, MerchantPlanRow, OrderRow, VerificationRow
from iot_cards.schemas import (
    AppUsage,
    AssignmentReport,
    BuyerPublic,
    CardAssignment,
    CardCommand,
    CardDetail,
    CardPublic,
    HistoryEntry,
    ImportReport,
    InvoicePublic,
    InvoiceTitle,
    MerchantOrderPublic,
    MerchantPlanPublic,
    MerchantPlanSet,
    OrderPublic,
    PlanKind,
    PurchaseCreate,
    RechargeCreate,
    RefundPublic,
    SellerProfile,
    StatementLine,
    StatementPublic,
    StatementTotals,
    StorePlan,
    StorePublic,
    SweepReport,
    ThresholdCreate,
    ThresholdPublic,
    UsageAlert,
    UsagePublic,
    VerificationPublic,
    VerificationRequest,
    WholesalePlanCreate,
    WholesalePlanPublic,
)
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role
from webhooks import service as webhooks

log = logging.getLogger(__name__)

# Billing periods are calendar months in the payer's time zone (DESIGN.md: Units).
ZONE = ZoneInfo("Asia/Shanghai")
MAX_IMPORT_ROWS = 100_000
MAX_REPORTED_ERRORS = 100
QUOTA_EXHAUSTED = "quota_exhausted"
IMEI_MISMATCH = "imei_mismatch"


# --- periods -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime
    month: date

    @property
    def label(self) -> str:
        return self.month.strftime("%Y-%m")


def month_start(year: int, month: int) -> datetime:
    """The first instant of a calendar month in Asia/Shanghai, in UTC."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=ZONE).astimezone(UTC)


def period_of(at: datetime) -> Period:
    """The calendar month (Asia/Shanghai) holding `at`."""
    local = at.astimezone(ZONE)
    return Period(
        month_start(local.year, local.month),
        month_start(local.year, local.month + 1),
        date(local.year, local.month, 1),
    )


def add_months(at: datetime, months: int) -> datetime:
    """`at` (a month start) moved by whole months."""
    local = at.astimezone(ZONE)
    return month_start(local.year, local.month + months)


async def _is_merchant(conn: Connection, tenant_id: UUID) -> bool:
    try:
        tenant = await tenants.get_tenant(conn, tenant_id)
    except TenantNotFound:
        return False
    return tenant.role is Role.MERCHANT and not tenant.disabled


# --- inventory and plans (operator) ------------------------------------------------------


def _check_row(row: list[str]) -> tuple[tuple[str, str, str] | None, str | None]:
    if len(row) != 3:
        return None, f"expected 3 fields (iccid, imsi, msisdn), found {len(row)}"
    iccid, imsi, msisdn = (field.strip() for field in row)
    if not is_valid_iccid(iccid):
        return None, "iccid is not 19-20 digits with a valid Luhn check digit"
    if not (len(imsi) == 15 and imsi.isascii() and imsi.isdigit() and imsi.startswith("460")):
        return None, "imsi is not 15 digits starting with 460 (China)"
    if not (len(msisdn) in (11, 13) and msisdn.isascii() and msisdn.isdigit() and msisdn[0] == "1"):
        return None, "msisdn is not a mainland number of 11 or 13 digits"
    return (iccid, imsi, msisdn), None


async def import_cards(
    conn: Connection, *, csv_text: str, carrier: str, label: str, operator_id: UUID
) -> ImportReport:
    """Import a carrier's card batch (CSV: iccid,imsi,msisdn with that header). Every bad
    row is reported with its line number and reason, and then nothing is imported."""
    reader = csv.reader(io.StringIO(csv_text))
    errors: list[dict[str, object]] = []
    rows: list[tuple[str, str, str]] = []
    lines: dict[str, int] = {}
    seen: dict[str, int] = {}
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != ["iccid", "imsi", "msisdn"]:
        raise ImportRejected(
            "the first line must be the header iccid,imsi,msisdn",
            errors=[{"line": 1, "reason": "missing or wrong header"}],
        )
    for row in reader:
        line = reader.line_num
        if not any(field.strip() for field in row):
            continue
        if len(rows) + len(errors) >= MAX_IMPORT_ROWS:
            raise ImportRejected(f"a batch holds at most {MAX_IMPORT_ROWS} cards")
        checked, reason = _check_row(row)
        if checked is None:
            errors.append({"line": line, "reason": reason})
            continue
        duplicate = next((value for value in checked if value in seen), None)
        if duplicate is not None:
            errors.append({"line": line, "reason": f"duplicate of line {seen[duplicate]}"})
            continue
        for value in checked:
            seen[value] = line
        lines[checked[0]] = line
        rows.append(checked)
    if rows:
        existing = await repository.existing_identifiers(
            conn,
            iccids=[r[0] for r in rows],
            imsis=[r[1] for r in rows],
            msisdns=[r[2] for r in rows],
        )
        known = {value for found in existing for value in found}
        for checked_row in rows:
            clash = [
                name
                for name, value in zip(("iccid", "imsi", "msisdn"), checked_row, strict=True)
                if value in known
            ]
            if clash:
                errors.append(
                    {
                        "line": lines[checked_row[0]],
                        "reason": f"{', '.join(clash)} already imported",
                    }
                )
    if errors:
        errors.sort(key=lambda e: int(str(e["line"])))
        raise ImportRejected(
            f"{len(errors)} bad row(s); nothing was imported",
            errors=errors[:MAX_REPORTED_ERRORS],
            error_count=len(errors),
        )
    if not rows:
        raise ImportRejected("the batch holds no cards", errors=[])
    batch_id = await repository.insert_batch(
        conn, carrier=carrier, label=label, imported_by=operator_id, rows=rows
    )
    # The metering side learns the SIMs too, so their usage counts as provisioned.
    await ingest.provision_sims(conn, [r[0] for r in rows], label=f"iot:{carrier}")
    metrics.IOT_CARDS_IMPORTED.inc(len(rows))
    return ImportReport(batch_id=batch_id, carrier=carrier, cards=len(rows))


async def assign_cards(conn: Connection, body: CardAssignment) -> AssignmentReport:
    """Give a block of unassigned stock (ICCIDs first..last, same length) to a merchant;
    all or nothing."""
    if not await _is_merchant(conn, body.merchant_id):
        raise MerchantNotFound(f"no merchant {body.merchant_id}")
    if len(body.first_iccid) != len(body.last_iccid) or body.first_iccid > body.last_iccid:
        raise ImportRejected("a block runs from a first to a last ICCID of the same length")
    assigned, busy = await repository.assign_block(
        conn, merchant_id=body.merchant_id, first=body.first_iccid, last=body.last_iccid
    )
    if busy:
        raise CardsNotFree(
            f"{busy} card(s) in this block are already assigned or sold; nothing was assigned",
            busy=busy,
        )
    if not assigned:
        raise CardNotFound("no card of the inventory is in this block")
    return AssignmentReport(
        merchant_id=body.merchant_id,
        cards=assigned,
        first_iccid=body.first_iccid,
        last_iccid=body.last_iccid,
    )


def _plan_public(row: repository.PlanRow) -> WholesalePlanPublic:
    return WholesalePlanPublic(
        plan_id=row.plan_id,
        name=row.name,
        kind=PlanKind(row.kind),
        data_bytes=row.data_bytes,
        months=row.months,
        wholesale_minor=row.wholesale_minor,
        currency=row.currency,
        active=row.active,
        created_at=row.created_at,
    )


async def create_plan(conn: Connection, body: WholesalePlanCreate) -> WholesalePlanPublic:
    """A wholesale plan merchants may sell (its price never changes: make a new plan)."""
    row = await repository.insert_plan(
        conn,
        name=body.name,
        kind=body.kind.value,
        data_bytes=body.data_mb * MB,
        months=body.months,
        wholesale_minor=body.wholesale_minor,
        currency=body.currency,
    )
    return _plan_public(row)


async def list_plans(conn: Connection) -> list[WholesalePlanPublic]:
    return [_plan_public(p) for p in await repository.list_plans(conn)]


async def set_plan_active(conn: Connection, *, plan_id: UUID, active: bool) -> WholesalePlanPublic:
    """Withdraw a plan from sale (cards on it keep what they paid for) or offer it again."""
    row = await repository.set_plan_active(conn, plan_id, active)
    if row is None:
        raise PlanNotFound(f"no plan {plan_id}")
    return _plan_public(row)


# --- merchants ---------------------------------------------------------------------------


async def set_profile(conn: Connection, *, merchant_id: UUID, body: SellerProfile) -> SellerProfile:
    """The seller's name and tax id printed on your invoices."""
    if not idcheck.valid_tax_id(body.tax_id):
        raise InvalidTaxId("the tax id is not a valid 18-character unified social credit code")
    await repository.upsert_profile(
        conn, merchant_id=merchant_id, seller_name=body.seller_name, tax_id=body.tax_id
    )
    return body


def _merchant_plan_public(row: MerchantPlanRow) -> MerchantPlanPublic:
    return MerchantPlanPublic(
        plan_id=row.plan_id,
        name=row.name,
        kind=PlanKind(row.kind),
        data_bytes=row.data_bytes,
        months=row.months,
        currency=row.currency,
        wholesale_minor=row.wholesale_minor,
        retail_minor=row.retail_minor,
        margin_minor=row.retail_minor - row.wholesale_minor,
        pooled=row.pooled,
        on_sale=row.on_sale and row.active,
    )


async def set_price(
    conn: Connection, *, merchant_id: UUID, plan_id: UUID, body: MerchantPlanSet
) -> MerchantPlanPublic:
    """Your retail price for a wholesale plan (never below wholesale), pooling and sale."""
    if await repository.get_profile(conn, merchant_id) is None:
        raise ProfileRequired("PUT /v1/merchant/iot/profile with your seller name and tax id")
    plan = await repository.get_plan(conn, plan_id, lock=True)
    if plan is None:
        raise PlanNotFound(f"no plan {plan_id}")
    if body.retail_minor < plan.wholesale_minor:
        raise PriceBelowWholesale(
            f"the wholesale price of this plan is {plan.wholesale_minor} {plan.currency} minor"
            " units",
            wholesale_minor=plan.wholesale_minor,
        )
    await repository.upsert_merchant_plan(
        conn,
        merchant_id=merchant_id,
        plan_id=plan_id,
        retail_minor=body.retail_minor,
        pooled=body.pooled,
        on_sale=body.on_sale,
    )
    row = await repository.merchant_plan(conn, merchant_id, plan_id)
    assert row is not None
    return _merchant_plan_public(row)


async def merchant_plans(conn: Connection, *, merchant_id: UUID) -> list[MerchantPlanPublic]:
    return [_merchant_plan_public(p) for p in await repository.merchant_plans(conn, merchant_id)]


async def store(conn: Connection, *, merchant_id: UUID) -> StorePublic:
    """A merchant's store as buyers see it: plans on sale at retail, and cards in stock."""
    profile = await repository.get_profile(conn, merchant_id)
    if profile is None or not await _is_merchant(conn, merchant_id):
        raise MerchantNotFound(f"no store {merchant_id}")
    plans = [
        StorePlan(
            plan_id=p.plan_id,
            name=p.name,
            kind=PlanKind(p.kind),
            data_bytes=p.data_bytes,
            months=p.months,
            retail_minor=p.retail_minor,
            currency=p.currency,
        )
        for p in await repository.merchant_plans(conn, merchant_id)
        if p.on_sale and p.active
    ]
    return StorePublic(
        merchant_id=merchant_id,
        seller_name=profile[0],
        cards_in_stock=await repository.stock_count(conn, merchant_id),
        plans=plans,
    )


# --- cards -------------------------------------------------------------------------------


def _card_public(card: CardRow) -> CardPublic:
    return CardPublic(
        iccid=card.iccid,
        imsi=card.imsi,
        msisdn=card.msisdn,
        merchant_id=card.merchant_id,
        state=card.state,
        block_reasons=sorted(card.block_reasons),
        suspended_by=card.suspended_by,
        holder_id=card.holder_id,
        plan_id=card.plan_id,
        imei=card.imei,
        activated_at=card.activated_at,
        state_changed_at=card.state_changed_at,
    )


def _verification_public(row: VerificationRow) -> VerificationPublic:
    return VerificationPublic(
        verification_id=row.verification_id,
        iccid=row.iccid,
        state=row.state,  # type: ignore[arg-type]
        reason=row.reason,
        name_masked=row.name_masked,
        id_masked=row.id_masked,
        phone_masked=row.phone_masked,
        submitted_at=row.submitted_at,
        settled_at=row.settled_at,
    )


def _allowed(card: CardRow, actor: Actor) -> list[str]:
    commands = lifecycle_allowed(State(card.state), actor)
    if actor is Actor.HOLDER and card.suspended_by == Actor.MERCHANT.value:
        commands = [c for c in commands if c != Command.RESUME.value]
    return commands


async def _find_card(
    conn: Connection,
    iccid: str,
    *,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
    lock: bool = False,
) -> CardRow:
    """A card its merchant or holder may see; anyone else is told it does not exist."""
    assert merchant_id is not None or holder_id is not None
    card = await repository.get_card(
        conn, iccid, lock=lock, merchant_id=merchant_id, holder_id=holder_id
    )
    if card is None:
        raise CardNotFound(f"no card {iccid}")
    return card


async def card_detail(
    conn: Connection,
    *,
    iccid: str,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
) -> CardDetail:
    """A card with its history, its verification and the commands its viewer may give."""
    card = await _find_card(conn, iccid, merchant_id=merchant_id, holder_id=holder_id)
    verification = None
    if card.verification_id is not None:
        row = await repository.get_verification(conn, card.verification_id)
        verification = None if row is None else _verification_public(row)
    history = [
        HistoryEntry(
            command=h.command,
            from_state=h.from_state,
            to_state=h.to_state,
            actor=h.actor,
            reason=h.reason,
            effective_at=h.effective_at,
            applied_at=h.applied_at,
            status=h.status,
        )
        for h in await repository.history_of(conn, iccid)
    ]
    actor = Actor.MERCHANT if merchant_id is not None else Actor.HOLDER
    return CardDetail(
        **_card_public(card).model_dump(),
        allowed_commands=_allowed(card, actor),
        verification=verification,
        history=history,
    )


async def list_cards(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
    state: State | None = None,
    after: str | None = None,
    limit: int,
) -> list[CardPublic]:
    rows = await repository.list_cards(
        conn,
        merchant_id=merchant_id,
        holder_id=holder_id,
        state=None if state is None else state.value,
        after=after,
        limit=limit,
    )
    return [_card_public(c) for c in rows]


async def _transition(
    conn: Connection,
    card: CardRow,
    command: Command,
    *,
    actor: Actor,
    now: datetime,
    reason: str = "",
    key: str | None = None,
    effective_at: datetime | None = None,
    **changes: object,
) -> CardRow:
    """Apply a lifecycle command to a locked card and record it in the card's history."""
    state = State(card.state)
    permitted = can(command, state, actor) and (
        not (
            command is Command.RESUME
            and actor is Actor.HOLDER
            and card.suspended_by == Actor.MERCHANT.value
        )
    )
    if not permitted:
        detail = f"a card that is {state.value} cannot take the command {command.value}"
        if command is Command.RESUME and card.suspended_by == Actor.MERCHANT.value:
            detail = "the merchant suspended this card: only the merchant can resume it"
        raise TransitionNotAllowed(
            detail, state=state.value, command=command.value, allowed=_allowed(card, actor)
        )
    to = target(command, block_reasons=card.block_reasons)
    if command is Command.SUSPEND:
        changes["suspended_by"] = actor.value
    elif state is State.SUSPENDED:
        changes["suspended_by"] = None
    await repository.update_card(conn, card.iccid, state=to.value, state_changed_at=now, **changes)
    await repository.insert_history(
        conn,
        iccid=card.iccid,
        command=command.value,
        from_state=state.value,
        to_state=to.value,
        actor=actor.value,
        reason=reason,
        command_key=key,
        effective_at=effective_at or now,
        applied_at=now,
        status="applied",
    )
    metrics.IOT_CARD_TRANSITIONS.labels(command.value).inc()
    fresh = await repository.get_card(conn, card.iccid)
    assert fresh is not None
    return fresh


async def _replayed(conn: Connection, key: str, *, iccid: str, command: Command) -> bool:
    """Whether a command's key was already used: True for this very command (a repeat)."""
    done = await repository.history_by_key(conn, key)
    if done is None:
        return False
    if done.iccid != iccid or done.command != command.value:
        raise IdempotencyKeyReused("this Idempotency-Key was used for another command")
    return True


async def command(
    conn: Connection,
    *,
    iccid: str,
    actor: Actor,
    caller_id: UUID,
    key: str,
    body: CardCommand,
    now: datetime,
) -> CardDetail:
    """Suspend, resume or terminate a card, now, at a past time, or scheduled for later."""
    scope = {"merchant_id": caller_id} if actor is Actor.MERCHANT else {"holder_id": caller_id}
    card = await _find_card(conn, iccid, lock=True, **scope)
    if await _replayed(conn, key, iccid=iccid, command=body.command):
        return await card_detail(conn, iccid=iccid, **scope)
    sendable = MERCHANT_COMMANDS if actor is Actor.MERCHANT else HOLDER_COMMANDS
    if body.command not in sendable:
        raise TransitionNotAllowed(
            f"{actor.value}s cannot send the command {body.command.value}",
            state=card.state,
            command=body.command.value,
            allowed=_allowed(card, actor),
        )
    effective = body.effective_at
    if effective is not None and effective.tzinfo is None:
        raise InvalidEffectiveTime("give the effective time with its UTC offset")
    if effective is not None and effective > now:
        await repository.insert_history(
            conn,
            iccid=iccid,
            command=body.command.value,
            from_state=None,
            to_state=None,
            actor=actor.value,
            reason=body.reason,
            command_key=key,
            effective_at=effective,
            applied_at=None,
            status="scheduled",
        )
        return await card_detail(conn, iccid=iccid, **scope)
    if effective is not None:
        last = await repository.last_effective(conn, iccid)
        if last is not None and effective < last:
            raise InvalidEffectiveTime(
                f"the card last changed at {last.isoformat()}; a change cannot precede it"
            )
    card = await _transition(
        conn,
        card,
        body.command,
        actor=actor,
        now=now,
        reason=body.reason,
        key=key,
        effective_at=effective,
    )
    if body.command is Command.TERMINATE:
        await _give_back_slot(conn, card)
    return await card_detail(conn, iccid=iccid, **scope)


async def apply_scheduled(conn: Connection, *, now: datetime, limit: int = 500) -> tuple[int, int]:
    """Apply the scheduled commands that are due; returns (applied, skipped). A command no
    longer allowed when due is kept in the history as skipped, with the reason."""
    applied = skipped = 0
    for entry in await repository.due_scheduled(conn, now=now, limit=limit):
        card = await repository.get_card(conn, entry.iccid, lock=True)
        assert card is not None
        command_ = Command(entry.command)
        actor = Actor(entry.actor)
        state = State(card.state)
        if not can(command_, state, actor) or (
            command_ is Command.RESUME
            and actor is Actor.HOLDER
            and card.suspended_by == Actor.MERCHANT.value
        ):
            await repository.settle_scheduled(
                conn,
                entry.history_id,
                status="skipped",
                from_state=state.value,
                to_state=None,
                applied_at=now,
                reason=f"not allowed when due: the card was {state.value}",
            )
            skipped += 1
            continue
        to = target(command_, block_reasons=card.block_reasons)
        changes: dict[str, object] = {}
        if command_ is Command.SUSPEND:
            changes["suspended_by"] = actor.value
        elif state is State.SUSPENDED:
            changes["suspended_by"] = None
        await repository.update_card(
            conn, card.iccid, state=to.value, state_changed_at=now, **changes
        )
        await repository.settle_scheduled(
            conn,
            entry.history_id,
            status="applied",
            from_state=state.value,
            to_state=to.value,
            applied_at=now,
        )
        if command_ is Command.TERMINATE:
            await _give_back_slot(conn, card)
        applied += 1
    return applied, skipped


def _check_imei(raw: str) -> str:
    imei = raw.strip()
    if len(imei) != 15 or not idcheck.luhn_valid(imei):
        raise InvalidImei("an IMEI is 15 digits whose last one is the Luhn check digit")
    return imei


async def _set_block_reasons(
    conn: Connection, card: CardRow, reasons: set[str], *, now: datetime
) -> tuple[CardRow, str | None]:
    """Store the card's block causes and block or unblock it to match; returns the card and
    "blocked"/"unblocked" when its state changed."""
    if reasons == set(card.block_reasons):
        return card, None
    await repository.update_card(conn, card.iccid, block_reasons=sorted(reasons))
    fresh = await repository.get_card(conn, card.iccid)
    assert fresh is not None
    if fresh.state == State.ACTIVE and reasons:
        return await _transition(
            conn,
            fresh,
            Command.BLOCK,
            actor=Actor.SYSTEM,
            now=now,
            reason=",".join(sorted(reasons)),
        ), "blocked"
    if fresh.state == State.BLOCKED and not reasons:
        return await _transition(
            conn, fresh, Command.UNBLOCK, actor=Actor.SYSTEM, now=now, reason="the causes cleared"
        ), "unblocked"
    return fresh, None


async def activate(
    conn: Connection,
    *,
    iccid: str,
    actor: Actor,
    caller_id: UUID,
    key: str,
    imei: str,
    now: datetime,
) -> CardDetail:
    """Activate a verified card and bind it to its device's IMEI."""
    imei = _check_imei(imei)
    scope = {"merchant_id": caller_id} if actor is Actor.MERCHANT else {"holder_id": caller_id}
    card = await _find_card(conn, iccid, lock=True, **scope)
    if await _replayed(conn, key, iccid=iccid, command=Command.ACTIVATE):
        return await card_detail(conn, iccid=iccid, **scope)
    if card.state == State.PENDING_VERIFICATION:
        assert card.verification_id is not None
        verification = await repository.get_verification(conn, card.verification_id)
        assert verification is not None
        if verification.state != "verified":
            raise NotVerified(
                f"the real-name verification is {verification.state}: activation waits for it",
                verification_state=verification.state,
            )
    await _transition(
        conn,
        card,
        Command.ACTIVATE,
        actor=actor,
        now=now,
        key=key,
        imei=imei,
        last_imei=imei,
        activated_at=now,
    )
    await evaluate_usage(conn, now=now, iccids=[iccid])
    return await card_detail(conn, iccid=iccid, **scope)


async def report_imei(
    conn: Connection, *, iccid: str, actor: Actor, caller_id: UUID, imei: str, now: datetime
) -> CardDetail:
    """The IMEI of the device the card is in now: another than the bound one blocks the
    card; the bound one again unblocks it (if nothing else blocks it)."""
    imei = _check_imei(imei)
    scope = {"merchant_id": caller_id} if actor is Actor.MERCHANT else {"holder_id": caller_id}
    card = await _find_card(conn, iccid, lock=True, **scope)
    if card.imei is None:
        raise CardNotActivated("activate the card first: activation binds its IMEI")
    reasons = set(card.block_reasons)
    if imei == card.imei:
        reasons.discard(IMEI_MISMATCH)
    else:
        reasons.add(IMEI_MISMATCH)
    if card.last_imei != imei:
        await repository.update_card(conn, iccid, last_imei=imei)
    if card.state != State.TERMINATED:
        await _set_block_reasons(conn, card, reasons, now=now)
    return await card_detail(conn, iccid=iccid, **scope)


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityRequest:
    """What the identity-check provider is asked: held in memory only, never stored."""

    request_id: str
    name: str
    id_number: str
    phone: str

    def __repr__(self) -> str:
        # Never let a log line or a traceback print the person's data.
        return f"IdentityRequest(request_id={self.request_id!r})"


async def submit_verification(
    conn: Connection,
    *,
    iccid: str,
    holder_id: UUID,
    key: str,
    body: VerificationRequest,
    hash_key: bytes,
    now: datetime,
) -> tuple[VerificationPublic, IdentityRequest | None]:
    """Check the holder's name, resident ID number and phone, take one of the ID's ten card
    slots, and ask the identity-check provider (after the commit: see `settlement`)."""
    name = idcheck.normalise_name(body.name)
    resident = idcheck.parse_resident_id(body.id_number, today=now.astimezone(ZONE).date())
    phone = idcheck.check_phone(body.phone)
    card = await _find_card(conn, iccid, holder_id=holder_id, lock=True)
    if await _replayed(conn, key, iccid=iccid, command=Command.SUBMIT_VERIFICATION):
        assert card.verification_id is not None
        row = await repository.get_verification(conn, card.verification_id)
        assert row is not None
        return _verification_public(row), None
    if not can(Command.SUBMIT_VERIFICATION, State(card.state), Actor.HOLDER):
        raise TransitionNotAllowed(
            f"a card that is {card.state} takes no verification",
            state=card.state,
            command=Command.SUBMIT_VERIFICATION.value,
            allowed=_allowed(card, Actor.HOLDER),
        )
    paid = [
        o
        for o in await repository.list_orders(conn, iccid=iccid, buyer_id=holder_id, limit=20)
        if o.kind == "purchase" and o.state == "paid"
    ]
    if not paid:
        raise OrderNotPaid("the card's purchase is not paid yet; verify once it is")
    hashed = idcheck.id_hash(resident.number, key=hash_key)
    if not await repository.take_id_slot(conn, hashed):
        metrics.IOT_VERIFICATIONS.labels("refused_limit").inc()
        raise IdLimitReached("this ID number already holds 10 cards across all merchants")
    assert card.merchant_id is not None
    row = await repository.insert_verification(
        conn,
        iccid=iccid,
        holder_id=holder_id,
        merchant_id=card.merchant_id,
        id_hash=hashed,
        id_masked=idcheck.mask_id(resident.number),
        name_masked=idcheck.mask_name(name),
        phone_masked=idcheck.mask_phone(phone),
        submitted_at=now,
    )
    await _transition(
        conn,
        card,
        Command.SUBMIT_VERIFICATION,
        actor=Actor.HOLDER,
        now=now,
        key=key,
        verification_id=row.verification_id,
    )
    metrics.IOT_VERIFICATIONS.labels("submitted").inc()
    request = IdentityRequest(str(row.verification_id), name, resident.number, phone)
    return _verification_public(row), request


async def _give_back_slot(conn: Connection, card: CardRow) -> None:
    """A card leaving its holder frees its place among the ID's ten."""
    if card.verification_id is None:
        return
    row = await repository.get_verification(conn, card.verification_id, lock=True)
    if row is not None and row.holds_slot:
        await repository.give_back_id_slot(conn, row.id_hash)
        await repository.update_verification(conn, row.verification_id, holds_slot=False)


async def verification_of(conn: Connection, *, iccid: str, holder_id: UUID) -> VerificationPublic:
    card = await _find_card(conn, iccid, holder_id=holder_id)
    row = None
    if card.verification_id is not None:
        row = await repository.get_verification(conn, card.verification_id)
    if row is None:
        raise CardNotFound(f"card {iccid} has no verification yet")
    return _verification_public(row)


# --- orders ------------------------------------------------------------------------------


def _order_public(order: OrderRow) -> OrderPublic:
    return OrderPublic(
        order_id=order.order_id,
        kind=order.kind,  # type: ignore[arg-type]
        merchant_id=order.merchant_id,
        iccid=order.iccid,
        plan_id=order.plan_id,
        plan_name=order.plan_name,
        data_bytes=order.data_bytes,
        months=order.months,
        retail_minor=order.retail_minor,
        currency=order.currency,
        state=order.state,
        reason=order.reason,
        created_at=order.created_at,
        paid_at=order.paid_at,
    )


def merchant_order_public(order: OrderRow) -> MerchantOrderPublic:
    return MerchantOrderPublic(
        **_order_public(order).model_dump(),
        buyer_id=order.buyer_id,
        wholesale_minor=order.wholesale_minor,
        revenue_minor=order.retail_minor - order.wholesale_minor,
    )


def _invoice_party(body: InvoiceTitle) -> tuple[str, str | None]:
    if body.invoice_tax_id is not None and not idcheck.valid_tax_id(body.invoice_tax_id):
        raise InvalidTaxId("the invoice tax id is not a valid unified social credit code")
    return body.invoice_title or invoices.INDIVIDUAL, body.invoice_tax_id


async def _offered(conn: Connection, merchant_id: UUID, plan_id: UUID) -> MerchantPlanRow:
    plan = await repository.merchant_plan(conn, merchant_id, plan_id)
    if plan is None or not plan.on_sale or not plan.active:
        raise PlanNotOffered(f"the merchant does not sell plan {plan_id}")
    return plan


async def _insert_order(
    conn: Connection,
    *,
    kind: str,
    key: str,
    merchant_id: UUID,
    buyer_id: UUID,
    iccid: str,
    plan: MerchantPlanRow,
    body: InvoiceTitle,
    now: datetime,
) -> tuple[OrderRow, bool]:
    """The order for its key, priced from the merchant's plan as it is now."""
    title, tax_id = _invoice_party(body)
    return await repository.insert_order(
        conn,
        idempotency_key=key,
        kind=kind,
        merchant_id=merchant_id,
        buyer_id=buyer_id,
        iccid=iccid,
        plan_id=plan.plan_id,
        plan_kind=plan.kind,
        plan_name=plan.name,
        data_bytes=plan.data_bytes,
        months=plan.months,
        retail_minor=plan.retail_minor,
        wholesale_minor=plan.wholesale_minor,
        currency=plan.currency,
        invoice_title=title,
        invoice_tax_id=tax_id,
        created_at=now,
    )


async def purchase(
    conn: Connection, *, buyer_id: UUID, key: str, body: PurchaseCreate, now: datetime
) -> tuple[OrderPublic, bool]:
    """Order a card from a merchant's stock with a monthly plan; returns the order and
    whether it is new (then the payment is to be taken: `settlement.process_order`)."""
    _invoice_party(body)
    existing = await repository.order_by_key(conn, key)
    if existing is not None:
        if (existing.kind, existing.merchant_id, existing.plan_id) != (
            "purchase",
            body.merchant_id,
            body.plan_id,
        ):
            raise IdempotencyKeyReused("this Idempotency-Key was used for another order")
        return _order_public(existing), False
    if await repository.get_profile(conn, body.merchant_id) is None:
        raise MerchantNotFound(f"no store {body.merchant_id}")
    plan = await _offered(conn, body.merchant_id, body.plan_id)
    if plan.kind != PlanKind.MONTHLY:
        raise WrongPlanKind("a card is bought with a monthly plan; top-ups are recharges")
    iccid = await repository.take_card_from_stock(conn, body.merchant_id)
    if iccid is None:
        raise OutOfStock("this store has no card left")
    order, created = await _insert_order(
        conn,
        kind="purchase",
        key=key,
        merchant_id=body.merchant_id,
        buyer_id=buyer_id,
        iccid=iccid,
        plan=plan,
        body=body,
        now=now,
    )
    if not created:
        return _order_public(order), False
    card = await repository.get_card(conn, iccid, lock=True)
    assert card is not None
    await _transition(
        conn,
        card,
        Command.SELL,
        actor=Actor.SYSTEM,
        now=now,
        reason=f"order {order.order_id}",
        holder_id=buyer_id,
        plan_id=plan.plan_id,
    )
    metrics.IOT_ORDERS.labels("purchase", "placed").inc()
    return _order_public(order), True


async def recharge(
    conn: Connection,
    *,
    buyer_id: UUID,
    iccid: str,
    key: str,
    body: RechargeCreate,
    now: datetime,
) -> tuple[OrderPublic, bool]:
    """Buy more data for your card: a monthly plan renews it (after its current term), a
    top-up adds data to this month."""
    _invoice_party(body)
    existing = await repository.order_by_key(conn, key)
    if existing is not None:
        if (existing.kind, existing.iccid, existing.plan_id) != ("recharge", iccid, body.plan_id):
            raise IdempotencyKeyReused("this Idempotency-Key was used for another order")
        return _order_public(existing), False
    card = await _find_card(conn, iccid, holder_id=buyer_id)
    if card.state in (State.TERMINATED, State.INVENTORY):
        raise TransitionNotAllowed(
            f"a card that is {card.state} cannot be recharged",
            state=card.state,
            command="recharge",
            allowed=_allowed(card, Actor.HOLDER),
        )
    assert card.merchant_id is not None
    plan = await _offered(conn, card.merchant_id, body.plan_id)
    order, created = await _insert_order(
        conn,
        kind="recharge",
        key=key,
        merchant_id=card.merchant_id,
        buyer_id=buyer_id,
        iccid=iccid,
        plan=plan,
        body=body,
        now=now,
    )
    if created:
        metrics.IOT_ORDERS.labels("recharge", "placed").inc()
    return _order_public(order), created


async def get_order(
    conn: Connection,
    *,
    order_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> OrderRow:
    order = await repository.get_order(conn, order_id)
    if (
        order is None
        or (merchant_id is not None and order.merchant_id != merchant_id)
        or (buyer_id is not None and order.buyer_id != buyer_id)
    ):
        raise OrderNotFound(f"no order {order_id}")
    return order


async def buyer_order(conn: Connection, *, order_id: UUID, buyer_id: UUID) -> OrderPublic:
    return _order_public(await get_order(conn, order_id=order_id, buyer_id=buyer_id))


async def orders(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    iccid: str | None = None,
    limit: int,
) -> list[OrderRow]:
    return await repository.list_orders(
        conn, merchant_id=merchant_id, buyer_id=buyer_id, iccid=iccid, limit=limit
    )


async def request_refund(
    conn: Connection, *, merchant_id: UUID, order_id: UUID, key: str, reason: str
) -> tuple[repository.RefundRow, bool]:
    """Refund a paid order whole: the money goes back through the payment gateway, then the
    books are reversed, the data withdrawn and a red-letter invoice issued."""
    existing = await repository.get_refund(conn, key=key)
    if existing is not None:
        if existing.order_id != order_id:
            raise IdempotencyKeyReused("this Idempotency-Key was used for another refund")
        await get_order(conn, order_id=order_id, merchant_id=merchant_id)
        return existing, False
    order = await get_order(conn, order_id=order_id, merchant_id=merchant_id)
    order = await repository.get_order(conn, order_id, lock=True) or order
    if order.state != "paid":
        raise NotRefundable(f"an order that is {order.state} cannot be refunded")
    refund = await repository.insert_refund(
        conn, order_id=order_id, key=key, amount_minor=order.retail_minor, reason=reason
    )
    await repository.update_order(conn, order_id, state="refunding")
    return refund, True


# --- usage -------------------------------------------------------------------------------


async def card_usage(
    conn: Connection,
    *,
    iccid: str,
    now: datetime,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
) -> UsagePublic:
    """Usage this month against the plan, per app, from the metered data."""
    card = await _find_card(conn, iccid, merchant_id=merchant_id, holder_id=holder_id)
    period = period_of(now)
    by_app: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for hour in await ingest.hourly_usage(conn, iccid=iccid, since=period.start, until=period.end):
        by_app[hour.app][0] += hour.up_bytes
        by_app[hour.app][1] += hour.down_bytes
    used = sum(up + down for up, down in by_app.values())
    quota = (await repository.quotas(conn, [iccid], period_start=period.start)).get(iccid, 0)
    mates = [
        c
        for c in await repository.live_cards(conn, [iccid])
        if c.pooled and c.plan_id == card.plan_id and c.merchant_id == card.merchant_id
    ]
    pooled = bool(mates)
    pool_ids = [c.iccid for c in mates] or [iccid]
    pool_used = sum(
        (
            await ingest.usage_totals(conn, iccids=pool_ids, since=period.start, until=period.end)
        ).values()
    )
    pool_quota = sum((await repository.quotas(conn, pool_ids, period_start=period.start)).values())
    return UsagePublic(
        iccid=iccid,
        period=period.label,
        period_start=period.start,
        period_end=period.end,
        quota_bytes=quota,
        used_bytes=used,
        remaining_bytes=max(0, quota - used),
        pooled=pooled,
        pool_cards=len(pool_ids),
        pool_used_bytes=pool_used,
        pool_quota_bytes=pool_quota,
        by_app=[
            AppUsage(app=app, up_bytes=up, down_bytes=down)
            for app, (up, down) in sorted(by_app.items())
        ],
    )


@dataclass(frozen=True, slots=True)
class UsageOutcome:
    evaluated: int
    blocked: int
    unblocked: int
    alerts: int


async def evaluate_usage(
    conn: Connection, *, now: datetime, iccids: list[str] | None = None
) -> UsageOutcome:
    """Judge activated cards' usage this month against their plans (a pooled plan's cards
    together): record each threshold crossing once, and block cards whose quota is used up
    (unblocking those whose quota came back). All cards when `iccids` is None."""
    cards = await repository.live_cards(conn, iccids)
    if not cards:
        return UsageOutcome(0, 0, 0, 0)
    period = period_of(now)
    ids = [c.iccid for c in cards]
    quota = await repository.quotas(conn, ids, period_start=period.start)
    used = await ingest.usage_totals(conn, iccids=ids, since=period.start, until=period.end)
    groups: dict[str, list[repository.LiveCard]] = defaultdict(list)
    for card in cards:
        groups[f"pool:{card.plan_id}" if card.pooled else card.iccid].append(card)
    thresholds: dict[UUID, list[repository.ThresholdRow]] = defaultdict(list)
    for threshold in await repository.thresholds_of(conn, list({c.merchant_id for c in cards})):
        thresholds[threshold.merchant_id].append(threshold)
    blocked = unblocked = alerts = 0
    for subject, members in groups.items():
        merchant_id = members[0].merchant_id
        group_quota = sum(quota.get(c.iccid, 0) for c in members)
        group_used = sum(used.get(c.iccid, 0) for c in members)
        for threshold in thresholds[merchant_id]:
            if threshold.bytes is not None:
                limit = threshold.bytes
            else:
                assert threshold.percent is not None
                # Ceiling: 80 % of the quota is crossed once at least that much is used.
                limit = -(-group_quota * threshold.percent // 100)
            if (
                limit > 0
                and group_used >= limit
                and await repository.record_alert(
                    conn,
                    merchant_id=merchant_id,
                    subject=subject,
                    iccids=[c.iccid for c in members],
                    threshold_id=threshold.threshold_id,
                    period=period.month,
                    used_bytes=group_used,
                    quota_bytes=group_quota,
                    now=now,
                )
            ):
                alerts += 1
                metrics.IOT_USAGE_ALERTS.inc()
        exhausted = group_used >= group_quota
        for member in members:
            if (QUOTA_EXHAUSTED in member.block_reasons) == exhausted:
                continue
            locked = await repository.get_card(conn, member.iccid, lock=True)
            assert locked is not None
            reasons = set(locked.block_reasons)
            if exhausted:
                reasons.add(QUOTA_EXHAUSTED)
            else:
                reasons.discard(QUOTA_EXHAUSTED)
            _, change = await _set_block_reasons(conn, locked, reasons, now=now)
            blocked += change == "blocked"
            unblocked += change == "unblocked"
    return UsageOutcome(len(cards), blocked, unblocked, alerts)


async def sweep(conn: Connection, *, now: datetime) -> SweepReport:
    """The periodic job: apply due scheduled commands, then judge every card's usage."""
    applied, skipped = await apply_scheduled(conn, now=now)
    outcome = await evaluate_usage(conn, now=now)
    return SweepReport(
        scheduled_applied=applied,
        scheduled_skipped=skipped,
        cards_evaluated=outcome.evaluated,
        blocked=outcome.blocked,
        unblocked=outcome.unblocked,
        alerts=outcome.alerts,
    )


async def blocked_cards(conn: Connection, iccids: list[str]) -> dict[str, str]:
    """IoT cards among `iccids` that may not use data now → why (for the coverage message).

    Reasons: the system's block causes joined by "," ("imei_mismatch", "quota_exhausted"),
    or "suspended", "terminated", "not_activated". Active cards and SIMs that are not IoT
    cards are left out.
    """
    found: dict[str, str] = {}
    for iccid, state, reasons in await repository.states_of(conn, iccids):
        if state == State.ACTIVE:
            continue
        if state == State.BLOCKED:
            found[iccid] = ",".join(sorted(reasons)) or "blocked"
        elif state in (State.SUSPENDED, State.TERMINATED):
            found[iccid] = state
        else:
            found[iccid] = "not_activated"
    return found


async def cards_changed_since(conn: Connection, *, since: datetime) -> list[str]:
    """ICCIDs whose state changed after `since` (blocked, unblocked, suspended, activated…):
    the SIMs whose coverage message the publisher should send again."""
    return await repository.cards_changed_since(conn, since=since)


async def add_threshold(
    conn: Connection, *, merchant_id: UUID, body: ThresholdCreate
) -> ThresholdPublic:
    """Alert when a card (or a pool) crosses a share of its monthly quota or an amount."""
    row = await repository.insert_threshold(
        conn,
        merchant_id=merchant_id,
        percent=body.percent,
        data_bytes=None if body.mb is None else body.mb * MB,
    )
    if row is None:
        existing = [
            t
            for t in await repository.thresholds_of(conn, [merchant_id])
            if t.percent == body.percent and t.bytes == (None if body.mb is None else body.mb * MB)
        ]
        row = existing[0]
    return ThresholdPublic(
        threshold_id=row.threshold_id,
        percent=row.percent,
        bytes=row.bytes,
        created_at=row.created_at,
    )


async def thresholds(conn: Connection, *, merchant_id: UUID) -> list[ThresholdPublic]:
    return [
        ThresholdPublic(
            threshold_id=t.threshold_id, percent=t.percent, bytes=t.bytes, created_at=t.created_at
        )
        for t in await repository.thresholds_of(conn, [merchant_id])
    ]


async def remove_threshold(conn: Connection, *, merchant_id: UUID, threshold_id: UUID) -> None:
    if not await repository.delete_threshold(
        conn, merchant_id=merchant_id, threshold_id=threshold_id
    ):
        raise ThresholdNotFound(f"no threshold {threshold_id}")


def _alert(row: repository.AlertRow) -> UsageAlert:
    return UsageAlert(
        alert_id=row.alert_id,
        merchant_id=row.merchant_id,
        subject=row.subject,
        iccids=list(row.iccids),
        threshold_id=row.threshold_id,
        percent=row.percent,
        bytes=row.bytes,
        period=row.period,
        used_bytes=row.used_bytes,
        quota_bytes=row.quota_bytes,
        crossed_at=row.crossed_at,
    )


async def pending_usage_alerts(
    conn: Connection, *, limit: int = 100, merchant_id: UUID | None = None
) -> list[UsageAlert]:
    """Threshold crossings not yet delivered, oldest first, locked for this transaction
    (concurrent senders skip each other's). Send each as a signed webhook to its merchant
    (event type "card.usage_threshold_reached", id `alert_id`), then call
    `mark_usage_alerts_delivered` in the same transaction."""
    return [
        _alert(r)
        for r in await repository.pending_alerts(conn, merchant_id=merchant_id, limit=limit)
    ]


async def queue_usage_alerts(conn: Connection, *, now: datetime, limit: int = 500) -> int:
    """Hand the recorded threshold crossings to the webhook queue (once each); returns how
    many were queued."""
    alerts = await pending_usage_alerts(conn, limit=limit)
    for alert in alerts:
        await webhooks.enqueue(
            conn, tenant_id=alert.merchant_id, event_type=alert.event_type,
            event_key=f"iot-usage-alert:{alert.alert_id}",
            payload=alert.model_dump(mode="json"), occurred_at=alert.crossed_at,
        )  # fmt: skip
    await mark_usage_alerts_delivered(conn, [a.alert_id for a in alerts], now=now)
    return len(alerts)


async def card_blocks(conn: Connection, iccids: list[str]) -> dict[str, str | None]:
    """Every IoT card among `iccids` → why it may not use data now, or None when its plan
    pays (for the coverage message); SIMs that are not IoT cards are left out."""
    blocked = await blocked_cards(conn, iccids)
    return {iccid: blocked.get(iccid) for iccid, _, _ in await repository.states_of(conn, iccids)}


async def mark_usage_alerts_delivered(
    conn: Connection, alert_ids: list[int], *, now: datetime
) -> int:
    """Record that these alerts were delivered; returns how many were still pending."""
    return await repository.mark_delivered(conn, alert_ids, now=now)


async def usage_alerts(conn: Connection, *, merchant_id: UUID, limit: int) -> list[UsageAlert]:
    return [_alert(r) for r in await repository.alerts_of(conn, merchant_id, limit=limit)]


# --- statements, buyers, invoices --------------------------------------------------------


def _line(order: OrderRow, at: datetime, sign: int) -> StatementLine:
    return StatementLine(
        order_id=order.order_id,
        kind=order.kind,
        iccid=order.iccid,
        plan_name=order.plan_name,
        at=at,
        retail_minor=sign * order.retail_minor,
        wholesale_minor=sign * order.wholesale_minor,
        revenue_minor=sign * (order.retail_minor - order.wholesale_minor),
    )


async def statement(
    conn: Connection, *, merchant_id: UUID, month: date, currency: str = "CNY"
) -> StatementPublic:
    """A month's sales and refunds (Asia/Shanghai), with what you earned: retail − wholesale."""
    since = month_start(month.year, month.month)
    until = month_start(month.year, month.month + 1)
    sales = [
        _line(o, o.paid_at, 1)
        for o in await repository.paid_between(conn, merchant_id, since=since, until=until)
        if o.currency == currency and o.paid_at is not None
    ]
    refunds = [
        _line(o, at, -1)
        for o, at in await repository.refunded_between(conn, merchant_id, since=since, until=until)
        if o.currency == currency
    ]
    lines = sales + refunds
    totals = StatementTotals(
        orders=len(sales),
        refunds=len(refunds),
        gross_minor=sum(x.retail_minor for x in lines),
        wholesale_minor=sum(x.wholesale_minor for x in lines),
        revenue_minor=sum(x.revenue_minor for x in lines),
    )
    return StatementPublic(
        merchant_id=merchant_id,
        month=month.strftime("%Y-%m"),
        currency=currency,
        sales=sales,
        refunds=refunds,
        totals=totals,
    )


async def buyers(
    conn: Connection, *, merchant_id: UUID, buyer_id: UUID | None = None
) -> list[BuyerPublic]:
    """The people who bought from you: masked names only."""
    found = [
        BuyerPublic(buyer_id=b, cards=cards, orders=count, name_masked=name, first_order_at=at)
        for b, cards, count, name, at in await repository.buyers_of(
            conn, merchant_id, buyer_id=buyer_id
        )
    ]
    if buyer_id is not None and not found:
        raise BuyerNotFound(f"no buyer {buyer_id}")
    return found


def invoice_public(row: repository.InvoiceRow) -> InvoicePublic:
    return InvoicePublic(
        invoice_id=row.invoice_id,
        order_id=row.order_id,
        colour=row.colour,  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        number=row.number,
        original_invoice_id=row.original_invoice_id,
        issued_at=row.issued_at,
        document=row.document,
    )


async def get_invoice(
    conn: Connection,
    *,
    invoice_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> repository.InvoiceRow:
    row = await repository.get_invoice(conn, invoice_id)
    if (
        row is None
        or (merchant_id is not None and row.merchant_id != merchant_id)
        or (buyer_id is not None and row.buyer_id != buyer_id)
    ):
        raise InvoiceNotFound(f"no invoice {invoice_id}")
    return row


async def list_invoices(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    limit: int,
) -> list[InvoicePublic]:
    rows = await repository.list_invoices(
        conn, merchant_id=merchant_id, buyer_id=buyer_id, limit=limit
    )
    return [invoice_public(r) for r in rows]


def refund_public(row: repository.RefundRow) -> RefundPublic:
    return RefundPublic(
        refund_id=row.refund_id,
        order_id=row.order_id,
        amount_minor=row.amount_minor,
        reason=row.reason,
        state=row.state,
        failure=row.failure,
        created_at=row.created_at,
        settled_at=row.settled_at,
    )


async def refund_of(conn: Connection, *, merchant_id: UUID, order_id: UUID) -> RefundPublic:
    await get_order(conn, order_id=order_id, merchant_id=merchant_id)
    row = await repository.get_refund(conn, order_id=order_id)
    if row is None:
        raise OrderNotFound(f"order {order_id} has no refund")
    return refund_public(row)


async def invoice_pdf(
    conn: Connection,
    *,
    invoice_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> bytes:
    """An issued invoice as a PDF a person can read."""
    row = await get_invoice(conn, invoice_id=invoice_id, merchant_id=merchant_id, buyer_id=buyer_id)
    if row.state != "issued":
        raise InvoicePending("the invoice has no number yet; try again shortly")
    return invoices.render_pdf(row.document)
