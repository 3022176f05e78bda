"""A card and the device it is in: activation binds a verified card to its device's IMEI,
and device reports compare the IMEI seen at each attach with the bound one."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flowbill.db import Connection
from flowbill.periods import Calendar
from iot_cards import idcheck
from iot_cards.errors import CardNotActivated, InvalidImei, NotVerified
from iot_cards.lifecycle import Actor, Command, State
from iot_cards.repository import cards as card_rows
from iot_cards.repository import verification as verifications
from iot_cards.schemas import CardDetail
from iot_cards.service import cards, usage
from iot_cards.service.cards import IMEI_MISMATCH


def _check_imei(raw: str) -> str:
    imei = raw.strip()
    if len(imei) != 15 or not idcheck.luhn_valid(imei):
        raise InvalidImei("an IMEI is 15 digits whose last one is the Luhn check digit")
    return imei


async def activate(
    conn: Connection,
    *,
    iccid: str,
    actor: Actor,
    caller_id: UUID,
    key: str,
    imei: str,
    now: datetime,
    calendar: Calendar,
) -> CardDetail:
    """Activate a verified card and bind it to its device's IMEI."""
    imei = _check_imei(imei)
    scope = {"merchant_id": caller_id} if actor is Actor.MERCHANT else {"holder_id": caller_id}
    card = await cards.find_card(conn, iccid, lock=True, **scope)
    if await cards.replayed(conn, key, iccid=iccid, command=Command.ACTIVATE):
        return await cards.card_detail(conn, iccid=iccid, **scope)
    if card.state == State.PENDING_VERIFICATION:
        assert card.verification_id is not None
        verification = await verifications.get_verification(conn, card.verification_id)
        assert verification is not None
        if verification.state != "verified":
            raise NotVerified(
                f"the real-name verification is {verification.state}: activation waits for it",
                verification_state=verification.state,
            )
    await cards.transition(
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
    await usage.evaluate_usage(conn, now=now, calendar=calendar, iccids=[iccid])
    return await cards.card_detail(conn, iccid=iccid, **scope)


async def report_imei(
    conn: Connection, *, iccid: str, actor: Actor, caller_id: UUID, imei: str, now: datetime
) -> CardDetail:
    """The IMEI of the device the card is in now: another than the bound one blocks the
    card; the bound one again unblocks it (if nothing else blocks it)."""
    imei = _check_imei(imei)
    scope = {"merchant_id": caller_id} if actor is Actor.MERCHANT else {"holder_id": caller_id}
    card = await cards.find_card(conn, iccid, lock=True, **scope)
    if card.imei is None:
        raise CardNotActivated("activate the card first: activation binds its IMEI")
    reasons = set(card.block_reasons)
    if imei == card.imei:
        reasons.discard(IMEI_MISMATCH)
    else:
        reasons.add(IMEI_MISMATCH)
    if card.last_imei != imei:
        await card_rows.update_card(conn, iccid, last_imei=imei)
    if card.state != State.TERMINATED:
        await cards.set_block_reasons(conn, card, reasons, now=now)
    return await cards.card_detail(conn, iccid=iccid, **scope)
