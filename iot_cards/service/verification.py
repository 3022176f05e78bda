"""Real-name verification: a holder's name, resident ID number and phone are checked here,
one of the ID number's ten card slots is taken, and the identity-check provider is asked
(after the commit: see `settlement`).

Personal data: the name, ID number and phone are hashed (the ID number, with a keyed HMAC)
and masked, and never stored, returned or logged in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from flowbill import metrics
from flowbill.db import Connection
from flowbill.periods import Calendar
from iot_cards import idcheck
from iot_cards.errors import CardNotFound, IdLimitReached, OrderNotPaid, TransitionNotAllowed
from iot_cards.lifecycle import Actor, Command, State, can
from iot_cards.repository import verification as repository
from iot_cards.repository.cards import CardRow
from iot_cards.schemas import VerificationPublic, VerificationRequest
from iot_cards.service import cards, orders


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
    calendar: Calendar,
) -> tuple[VerificationPublic, IdentityRequest | None]:
    """Check the holder's name, resident ID number and phone, take one of the ID's ten card
    slots, and ask the identity-check provider (after the commit: see `settlement`)."""
    name = idcheck.normalise_name(body.name)
    # The age is judged on the holder's calendar day, in the billing time zone.
    resident = idcheck.parse_resident_id(body.id_number, today=calendar.day_of(now))
    phone = idcheck.check_phone(body.phone)
    card = await cards.find_card(conn, iccid, holder_id=holder_id, lock=True)
    if await cards.replayed(conn, key, iccid=iccid, command=Command.SUBMIT_VERIFICATION):
        assert card.verification_id is not None
        row = await repository.get_verification(conn, card.verification_id)
        assert row is not None
        return VerificationPublic.model_validate(row), None
    if not can(Command.SUBMIT_VERIFICATION, State(card.state), Actor.HOLDER):
        raise TransitionNotAllowed(
            f"a card that is {card.state} takes no verification",
            state=card.state,
            command=Command.SUBMIT_VERIFICATION.value,
            allowed=cards.allowed_commands(card, Actor.HOLDER),
        )
    if not await orders.paid_purchase(conn, iccid=iccid, buyer_id=holder_id):
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
    await cards.transition(
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
    return VerificationPublic.model_validate(row), request


async def give_back_slot(conn: Connection, card: CardRow) -> None:
    """A card leaving its holder frees its place among the ID's ten."""
    if card.verification_id is None:
        return
    row = await repository.get_verification(conn, card.verification_id, lock=True)
    if row is not None and row.holds_slot:
        await repository.give_back_id_slot(conn, row.id_hash)
        await repository.update_verification(conn, row.verification_id, holds_slot=False)


async def verification_of(conn: Connection, *, iccid: str, holder_id: UUID) -> VerificationPublic:
    """Where a card's latest verification stands, for its holder."""
    card = await cards.find_card(conn, iccid, holder_id=holder_id)
    row = None
    if card.verification_id is not None:
        row = await repository.get_verification(conn, card.verification_id)
    if row is None or row.holder_id != holder_id:
        raise CardNotFound(f"card {iccid} has no verification yet")
    return VerificationPublic.model_validate(row)
