"""Commands merchants and holders give a card (suspend, resume, terminate): now, recorded at
an earlier time, or scheduled for later and applied by the sweep when due."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flowbill.db import Connection
from iot_cards.errors import InvalidEffectiveTime, TransitionNotAllowed
from iot_cards.lifecycle import (
    HOLDER_COMMANDS,
    MERCHANT_COMMANDS,
    Actor,
    Command,
    State,
    can,
    target,
)
from iot_cards.repository import cards as card_rows
from iot_cards.repository import commands as repository
from iot_cards.schemas import CardCommand, CardDetail
from iot_cards.service import cards, verification


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
    card = await cards.find_card(conn, iccid, lock=True, **scope)
    if await cards.replayed(conn, key, iccid=iccid, command=body.command):
        return await cards.card_detail(conn, iccid=iccid, **scope)
    sendable = MERCHANT_COMMANDS if actor is Actor.MERCHANT else HOLDER_COMMANDS
    if body.command not in sendable:
        raise TransitionNotAllowed(
            f"{actor.value}s cannot send the command {body.command.value}",
            state=card.state,
            command=body.command.value,
            allowed=cards.allowed_commands(card, actor),
        )
    effective = body.effective_at
    if effective is not None and effective.tzinfo is None:
        raise InvalidEffectiveTime("give the effective time with its UTC offset")
    if effective is not None and effective > now:
        await card_rows.insert_history(
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
        return await cards.card_detail(conn, iccid=iccid, **scope)
    if effective is not None:
        last = await repository.last_effective(conn, iccid)
        if last is not None and effective < last:
            raise InvalidEffectiveTime(
                f"the card last changed at {last.isoformat()}; a change cannot precede it"
            )
    card = await cards.transition(
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
        await verification.give_back_slot(conn, card)
    return await cards.card_detail(conn, iccid=iccid, **scope)


async def apply_scheduled(conn: Connection, *, now: datetime, limit: int = 500) -> tuple[int, int]:
    """Apply the scheduled commands that are due; returns (applied, skipped). A command no
    longer allowed when due is kept in the history as skipped, with the reason."""
    applied = skipped = 0
    cancelled: set[int] = set()
    for entry in await repository.due_scheduled(conn, now=now, limit=limit):
        if entry.history_id in cancelled:
            skipped += 1
            continue
        card = await card_rows.get_card(conn, entry.iccid, lock=True)
        assert card is not None
        command_ = Command(entry.command)
        actor = Actor(entry.actor)
        state = State(card.state)
        why = None
        if await repository.changed_hands_after(conn, entry.iccid, entry.history_id):
            why = "cancelled: the card changed hands after it was given"
        elif not can(command_, state, actor) or (
            command_ is Command.RESUME
            and actor is Actor.HOLDER
            and card.suspended_by == Actor.MERCHANT.value
        ):
            why = f"not allowed when due: the card was {state.value}"
        if why is not None:
            await repository.settle_scheduled(
                conn,
                entry.history_id,
                status="skipped",
                from_state=state.value,
                to_state=None,
                applied_at=now,
                reason=why,
            )
            skipped += 1
            continue
        to = target(command_, block_reasons=card.block_reasons)
        changes: dict[str, object] = {}
        if command_ is Command.SUSPEND:
            changes["suspended_by"] = actor.value
        elif state is State.SUSPENDED:
            changes["suspended_by"] = None
        await card_rows.update_card(
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
            await verification.give_back_slot(conn, card)
            cancelled.update(
                await cards.cancel_scheduled(
                    conn, card.iccid, from_state=state, command=command_, now=now
                )
            )
        applied += 1
    return applied, skipped
