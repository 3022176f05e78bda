"""A card and its lifecycle: who may see it, the commands its viewer may give now, the
change of state recorded in its history, the system's block causes, and which cards may not
use data (for the coverage message)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flowbill import metrics, paging
from flowbill.db import Connection
from flowbill.paging import Page
from iot_cards.errors import CardNotFound, IdempotencyKeyReused, TransitionNotAllowed
from iot_cards.lifecycle import Actor, Command, State, can, target
from iot_cards.lifecycle import allowed as lifecycle_allowed
from iot_cards.repository import cards as repository
from iot_cards.repository import commands as scheduled
from iot_cards.repository import verification as verifications
from iot_cards.repository.cards import CardRow
from iot_cards.schemas import CardDetail, CardPublic, HistoryEntry, VerificationPublic

# The system's block causes: any of them keeps an active card blocked.
QUOTA_EXHAUSTED = "quota_exhausted"
IMEI_MISMATCH = "imei_mismatch"
CARDS_SCOPE = "iot-cards"


# Commands given for later belong to the holding they were given in: a card that changes
# hands (released, sold again) or ends drops them, so a former holder's scheduled suspend
# never reaches the next holder.
ENDS_HOLDING = (Command.SELL, Command.RELEASE, Command.TERMINATE)


async def cancel_scheduled(
    conn: Connection, iccid: str, *, from_state: State, command: Command, now: datetime
) -> list[int]:
    """Cancel the card's scheduled commands (kept in its history as skipped, with why)."""
    done = {Command.SELL: "sold", Command.RELEASE: "released", Command.TERMINATE: "terminated"}
    return await scheduled.cancel_scheduled(
        conn, iccid, from_state=from_state.value, at=now,
        reason=f"cancelled: the card was {done.get(command, command.value)}",
    )  # fmt: skip


def allowed_commands(card: CardRow, actor: Actor) -> list[str]:
    """The commands `actor` may give the card now."""
    commands = lifecycle_allowed(State(card.state), actor)
    if actor is Actor.HOLDER and card.suspended_by == Actor.MERCHANT.value:
        commands = [c for c in commands if c != Command.RESUME.value]
    return commands


async def find_card(
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
    """A card with its history, its verification and the commands its viewer may give. A
    holder sees only its own holding: the history from the card's sale to it on, and its own
    verification."""
    card = await find_card(conn, iccid, merchant_id=merchant_id, holder_id=holder_id)
    verification = None
    if card.verification_id is not None:
        row = await verifications.get_verification(conn, card.verification_id)
        if row is not None and holder_id in (None, row.holder_id):
            verification = VerificationPublic.model_validate(row)
    actor = Actor.MERCHANT if merchant_id is not None else Actor.HOLDER
    history = await repository.history_of(conn, iccid, this_holding=actor is Actor.HOLDER)
    return CardDetail(
        **CardPublic.model_validate(card).model_dump(),
        allowed_commands=allowed_commands(card, actor),
        verification=verification,
        history=[HistoryEntry.model_validate(h) for h in history],
    )


async def list_cards(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
    state: State | None = None,
    cursor: str | None,
    limit: int,
) -> Page[CardPublic]:
    """One page of a merchant's or a holder's cards in ICCID order, optionally in one state."""
    after = None if cursor is None else paging.decode_cursor(cursor, (str,), scope=CARDS_SCOPE)[0]
    rows = await repository.list_cards(
        conn,
        merchant_id=merchant_id,
        holder_id=holder_id,
        state=None if state is None else state.value,
        after=after,
        limit=limit,
    )
    found = paging.page(rows, limit=limit, key=lambda c: (c.iccid,), scope=CARDS_SCOPE)
    return Page[CardPublic].model_validate(found, from_attributes=True)


async def transition(
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
            detail, state=state.value, command=command.value, allowed=allowed_commands(card, actor)
        )
    to = target(command, block_reasons=card.block_reasons)
    if command is Command.SUSPEND:
        changes["suspended_by"] = actor.value
    elif state is State.SUSPENDED:
        changes["suspended_by"] = None
    await repository.update_card(conn, card.iccid, state=to.value, state_changed_at=now, **changes)
    if command in ENDS_HOLDING:
        await cancel_scheduled(conn, card.iccid, from_state=state, command=command, now=now)
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


async def replayed(conn: Connection, key: str, *, iccid: str, command: Command) -> bool:
    """Whether a command's key was already used: True for this very command (a repeat)."""
    done = await repository.history_by_key(conn, key)
    if done is None:
        return False
    if done.iccid != iccid or done.command != command.value:
        raise IdempotencyKeyReused("this Idempotency-Key was used for another command")
    return True


async def set_block_reasons(
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
        return await transition(
            conn,
            fresh,
            Command.BLOCK,
            actor=Actor.SYSTEM,
            now=now,
            reason=",".join(sorted(reasons)),
        ), "blocked"
    if fresh.state == State.BLOCKED and not reasons:
        return await transition(
            conn, fresh, Command.UNBLOCK, actor=Actor.SYSTEM, now=now, reason="the causes cleared"
        ), "unblocked"
    return fresh, None


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


async def card_blocks(conn: Connection, iccids: list[str]) -> dict[str, str | None]:
    """Every IoT card among `iccids` → why it may not use data now, or None when its plan
    pays (for the coverage message); SIMs that are not IoT cards are left out."""
    blocked = await blocked_cards(conn, iccids)
    return {iccid: blocked.get(iccid) for iccid, _, _ in await repository.states_of(conn, iccids)}
