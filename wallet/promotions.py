"""What fills wallets: merchants buy data, run campaigns, partners report actions, users check in.

Data flows: platform → merchant pool (bought at the platform's price) → campaign budget →
users' wallets as lots with the campaign's validity; ending a campaign returns what is left
of its budget to the pool. Services never commit: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.periods import Calendar
from flowbill.units import MB
from tenants import service as tenants
from tenants.schemas import Role
from wallet import service, streaks
from wallet.errors import (
    BudgetSpent,
    CampaignEnded,
    CampaignNotFound,
    EventIdReused,
    IdempotencyKeyReused,
    NoCheckInFunding,
    PartnerNotLinked,
    PriceNotConfigured,
    UnknownUser,
    UserLimitReached,
    WrongAction,
)
from wallet.repository import ledger
from wallet.repository import promotions as repository
from wallet.repository.promotions import CampaignRow
from wallet.schemas import (
    ActionEvent,
    ActionEventResult,
    CampaignCreate,
    CampaignPublic,
    CheckInResult,
    CheckInRulesPublic,
    CheckInRulesUpdate,
    DataPrice,
    DataPurchased,
    PoolPublic,
    Reward,
)
from wallet.service import DATA, AccountKind


async def require_user(conn: Connection, user_id: UUID) -> str:
    """The wallet owner for a user id: an active driver (or card holder) tenant."""
    if not await tenants.has_role(conn, user_id, Role.DRIVER):
        raise UnknownUser(f"no active user {user_id}")
    return str(user_id)


# --- Prices and pools ----------------------------------------------------------------------


def price_of(mb: int, minor_per_100mb: int) -> int:
    """The price of `mb` whole MB, rounded half up once."""
    return (mb * minor_per_100mb + 50) // 100


async def data_prices(conn: Connection, *, limit: int, cursor: str | None) -> Page[DataPrice]:
    """The wholesale price of data, per currency."""
    after = None if cursor is None else paging.decode_cursor(cursor, (str,), scope="prices")
    rows = await repository.data_prices(
        conn, after=None if after is None else after[0], limit=limit + 1
    )
    return paging.page(
        [DataPrice.model_validate(row) for row in rows],
        limit=limit, key=lambda price: (price.currency,), scope="prices",
    )  # fmt: skip


async def set_data_price(conn: Connection, *, currency: str, minor_per_100mb: int) -> DataPrice:
    """Set the wholesale price merchants pay; purchases made before keep their price."""
    return DataPrice.model_validate(
        await repository.set_data_price(conn, currency, minor_per_100mb)
    )


async def buy_data(
    conn: Connection, *, key: str, merchant_id: UUID, mb: int, currency: str
) -> DataPurchased:
    """A merchant buys data for its pool at the platform's current price."""
    minor_per_100mb = await repository.data_price(conn, currency)
    if minor_per_100mb is None:
        raise PriceNotConfigured(f"no data price in {currency}")
    funded = await service.fund_pool(
        conn, key=key, merchant=str(merchant_id), data_bytes=mb * MB,
        price_minor=price_of(mb, minor_per_100mb), currency=currency,
    )  # fmt: skip
    return DataPurchased(
        txn_id=funded.txn_id,
        data_bytes=funded.data_bytes,
        price_minor=funded.price_minor,
        currency=currency,
    )


async def pool(conn: Connection, *, merchant_id: UUID) -> PoolPublic:
    """Data in the merchant's pool, and what its campaigns' budgets still hold."""
    in_pool = await _balance(conn, AccountKind.MERCHANT_POOL, str(merchant_id))
    in_campaigns = await repository.campaigns_budget_left(conn, merchant_id)
    return PoolPublic(data_bytes=in_pool, in_campaigns_bytes=in_campaigns)


async def _balance(conn: Connection, kind: AccountKind, owner: str) -> int:
    account = await ledger.find_account(conn, kind=kind.value, owner=owner, asset=DATA)
    return 0 if account is None else await ledger.account_balance(conn, account)


# --- Campaigns -----------------------------------------------------------------------------


def _running(campaign: CampaignRow, now: datetime) -> bool:
    return (
        campaign.ended_at is None
        and campaign.starts_at <= now
        and (campaign.ends_at is None or campaign.ends_at > now)
    )


async def _published(conn: Connection, campaign: CampaignRow, now: datetime) -> CampaignPublic:
    views = await repository.campaign_views(
        conn, campaign.merchant_id, now=now, campaign_id=campaign.campaign_id
    )
    return CampaignPublic.model_validate(views[0])


async def create_campaign(
    conn: Connection, *, key: str, merchant_id: UUID, spec: CampaignCreate, now: datetime
) -> CampaignPublic:
    """Start a campaign, moving its budget from the merchant's pool."""
    starts_at = spec.starts_at or now
    if spec.ends_at is not None and spec.ends_at <= max(starts_at, now):
        raise CampaignEnded("the campaign would end before it starts")
    # The budget's transaction is claimed first: its key makes the request idempotent.
    txn_id, created = await service.claim(
        conn, key=key, kind="campaign_budget", merchant=str(merchant_id),
        spec=spec.model_dump(mode="json", exclude={"starts_at"}),
    )  # fmt: skip
    if not created:
        found = await repository.campaign_by_budget_txn(conn, txn_id)
        assert found is not None
        return await _published(conn, found, now)
    campaign = await repository.insert_campaign(
        conn, merchant_id=merchant_id, name=spec.name, action=spec.action.value,
        bytes_per_action=spec.bytes_per_action, bytes_per_click=spec.bytes_per_click,
        per_user_limit=spec.per_user_limit, validity_days=spec.validity_days,
        budget_bytes=spec.budget_bytes, starts_at=starts_at, ends_at=spec.ends_at,
        budget_txn_id=txn_id,
    )  # fmt: skip
    await service.post_move(
        conn,
        txn_id,
        source=(AccountKind.MERCHANT_POOL, str(merchant_id)),
        destination=(AccountKind.CAMPAIGN, str(campaign.campaign_id)),
        asset=DATA,
        amount=spec.budget_bytes,
        memo={"campaign_id": str(campaign.campaign_id)},
    )
    return await _published(conn, campaign, now)


async def _merchants_campaign(
    conn: Connection, merchant_id: UUID, campaign_id: UUID, *, lock: bool = False
) -> CampaignRow:
    campaign = await repository.get_campaign(conn, campaign_id, lock=lock)
    if campaign is None or campaign.merchant_id != merchant_id:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return campaign


async def get_campaign(
    conn: Connection, *, merchant_id: UUID, campaign_id: UUID, now: datetime
) -> CampaignPublic:
    return await _published(conn, await _merchants_campaign(conn, merchant_id, campaign_id), now)


async def list_campaigns(
    conn: Connection, *, merchant_id: UUID, now: datetime, limit: int, cursor: str | None
) -> Page[CampaignPublic]:
    """The merchant's campaigns, oldest first, with their figures."""
    after = (
        None if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope="campaigns")
    )  # fmt: skip
    views = await repository.campaign_views(
        conn, merchant_id, now=now, after=after, limit=limit + 1
    )
    found = paging.page(
        views, limit=limit, key=lambda c: (c.created_at, c.campaign_id), scope="campaigns"
    )
    return Page[CampaignPublic](
        items=[CampaignPublic.model_validate(view) for view in found.items],
        next_cursor=found.next_cursor,
    )


async def end_campaign(
    conn: Connection, *, merchant_id: UUID, campaign_id: UUID, now: datetime
) -> CampaignPublic:
    """End a campaign now and return its unspent budget to the pool (idempotent)."""
    campaign = await _merchants_campaign(conn, merchant_id, campaign_id, lock=True)
    if campaign.ended_at is None:
        await repository.end_campaign(conn, campaign_id, now=now)
    left = await _balance(conn, AccountKind.CAMPAIGN, str(campaign_id))
    if left > 0:
        await service.move(
            conn, key=f"campaign:{campaign_id}:return:{campaign.budget_txn_id}:{left}",
            kind="campaign_return", source=(AccountKind.CAMPAIGN, str(campaign_id)),
            destination=(AccountKind.MERCHANT_POOL, str(merchant_id)), asset=DATA, amount=left,
            memo={"campaign_id": str(campaign_id)},
        )  # fmt: skip
    return await get_campaign(conn, merchant_id=merchant_id, campaign_id=campaign_id, now=now)


# --- Partner platforms' action events ------------------------------------------------------


async def _reward(
    conn: Connection,
    *,
    campaign: CampaignRow,
    key: str,
    user: str,
    role: str,
    data_bytes: int,
    now: datetime,
    memo: dict[str, object],
) -> Reward:
    if not await repository.count_reward(
        conn, campaign_id=campaign.campaign_id, user_id=user, limit=campaign.per_user_limit
    ):
        return Reward(
            user_id=UUID(user), role=role, data_bytes=0, lot_id=None, expires_at=None,
            refused=UserLimitReached.type_,
        )  # fmt: skip
    expires_at = now + timedelta(days=campaign.validity_days)
    granted = await service.grant(
        conn, key=key, funder=str(campaign.campaign_id), funder_kind=AccountKind.CAMPAIGN,
        user=user, data_bytes=data_bytes, expires_at=expires_at,
        source=f"campaign:{campaign.campaign_id}", now=now, memo=memo,
    )  # fmt: skip
    return Reward(
        user_id=UUID(user), role=role, data_bytes=data_bytes, lot_id=granted.lot_id,
        expires_at=expires_at,
    )  # fmt: skip


async def record_action(
    conn: Connection, *, partner_id: UUID, event: ActionEvent, now: datetime
) -> ActionEventResult:
    """Grant a campaign's reward for a user's action, once per event id."""
    campaign = await repository.get_campaign(conn, event.campaign_id)
    if campaign is None or not await repository.is_partner_of(
        conn, partner_id=partner_id, merchant_id=campaign.merchant_id
    ):
        raise CampaignNotFound(f"no campaign {event.campaign_id} of a merchant you act for")
    if campaign.action != event.action.value:
        raise WrongAction(f"campaign {campaign.campaign_id} rewards {campaign.action}")
    new, first_campaign, first_action, granted = await repository.claim_event(
        conn, partner_id=partner_id, event_id=event.event_id,
        campaign_id=event.campaign_id, action=event.action.value,
    )  # fmt: skip
    if not new:
        if first_campaign != event.campaign_id or first_action != event.action.value:
            raise EventIdReused(f"event {event.event_id} was sent for another campaign or action")
        assert isinstance(granted, list)
        return ActionEventResult(
            event_id=event.event_id, campaign_id=event.campaign_id, repeated=True,
            rewards=[Reward.model_validate(r) for r in granted],
        )  # fmt: skip
    recipients = [(await require_user(conn, event.user_id), "actor", campaign.bytes_per_action)]
    if event.clicked_by is not None and campaign.bytes_per_click > 0:
        recipients.append(
            (await require_user(conn, event.clicked_by), "clicker", campaign.bytes_per_click)
        )
    if not _running(campaign, now):
        raise CampaignEnded(f"campaign {campaign.campaign_id} is not running")
    budget = await ledger.find_account(
        conn, kind=AccountKind.CAMPAIGN.value, owner=str(campaign.campaign_id), asset=DATA
    )
    # The budget row's lock serialises the campaign's grants: the check below holds.
    left = 0 if budget is None else await ledger.lock_account(conn, budget)
    if left < sum(amount for _, _, amount in recipients):
        raise BudgetSpent(f"campaign {campaign.campaign_id} has {left} bytes left")
    memo: dict[str, object] = {
        "campaign_id": str(campaign.campaign_id),
        "merchant_id": str(campaign.merchant_id),
        "action": event.action.value,
    }
    rewards = [
        await _reward(
            conn,
            campaign=campaign,
            key=f"action:{partner_id}:{event.event_id}:{role}",
            user=user,
            role=role,
            data_bytes=amount,
            now=now,
            memo=memo,
        )
        for user, role, amount in recipients
    ]
    if all(r.refused for r in rewards):
        raise UserLimitReached("the user has had every reward this campaign allows")
    await repository.set_event_grants(
        conn, partner_id=partner_id, event_id=event.event_id,
        granted=[r.model_dump(mode="json") for r in rewards],
    )  # fmt: skip
    return ActionEventResult(
        event_id=event.event_id, campaign_id=event.campaign_id, repeated=False, rewards=rewards
    )


# --- The check-in tool ---------------------------------------------------------------------


async def check_in_rules(conn: Connection) -> streaks.CheckInRules:
    """The rules that decide what a check-in is worth."""
    row = await repository.check_in_rules(conn)
    return streaks.CheckInRules(
        cycle_days=row.cycle_days,
        daily_bytes=row.daily_bytes,
        streak_bytes={int(day): int(amount) for day, amount in row.streak_bytes.items()},
        validity_days=row.validity_days,
    )


async def check_in_rules_public(conn: Connection) -> CheckInRulesPublic:
    """The check-in rules, as callers see them."""
    return CheckInRulesPublic.model_validate(await repository.check_in_rules(conn))


async def set_check_in_rules(conn: Connection, rules: CheckInRulesUpdate) -> CheckInRulesPublic:
    """Change the rules; streaks already running continue under the new ones."""
    await repository.set_check_in_rules(
        conn, cycle_days=rules.cycle_days, daily_bytes=rules.daily_bytes,
        streak_bytes={str(d): a for d, a in sorted(rules.streak_bytes.items())},
        validity_days=rules.validity_days,
    )  # fmt: skip
    return await check_in_rules_public(conn)


async def check_in(
    conn: Connection, *, app_id: UUID, user_id: UUID, now: datetime, calendar: Calendar
) -> CheckInResult:
    """Check a user in for today (the calendar's day): once a day, streaks earn more."""
    user = await require_user(conn, user_id)
    rules = await check_in_rules(conn)
    today = streaks.check_in_day(now, calendar)
    previous = await repository.last_check_in(conn, user, before=today)
    streak = streaks.next_streak(
        previous.day if previous else None, previous.streak if previous else 0, today
    )
    done = await repository.check_in_on(conn, user, today)
    if done is None:
        amount = streaks.reward(streak, rules)
        campaigns = await repository.check_in_campaigns(conn, now=now, at_least=amount)
        if not campaigns:
            raise NoCheckInFunding("no check-in campaign can fund today's reward; try later")
        campaign = await repository.get_campaign(conn, campaigns[0])
        assert campaign is not None
        # The ledger key names the user and the day: a concurrent second check-in waits for
        # the first and finds its grant.
        try:
            granted = await service.grant(
                conn, key=f"check-in:{user}:{today.isoformat()}",
                funder=str(campaign.campaign_id), funder_kind=AccountKind.CAMPAIGN, user=user,
                data_bytes=amount,
                expires_at=now + timedelta(days=min(rules.validity_days, campaign.validity_days)),
                source=f"check-in:{campaign.campaign_id}", now=now,
                memo={"campaign_id": str(campaign.campaign_id),
                      "check_in_day": today.isoformat(), "streak": streak,
                      "merchant_id": str(campaign.merchant_id)},
            )  # fmt: skip
        except IdempotencyKeyReused:
            # A concurrent check-in of the same day committed first: its expiry, counted from
            # its own moment, differs from ours by a little. That one is today's.
            done = await repository.check_in_on(conn, user, today)
            if done is None:
                raise
            granted = None
        if granted is not None:
            await repository.insert_check_in(
                conn, user_id=user, day=today, streak=streak, app_id=app_id,
                campaign_id=campaign.campaign_id, data_bytes=amount, txn_id=granted.txn_id,
                lot_id=granted.lot_id,
            )  # fmt: skip
            done = await repository.check_in_on(conn, user, today)
        assert done is not None
        if granted is not None and granted.new:
            return CheckInResult(
                user_id=user_id, day=today, streak=done.streak, data_bytes=amount,
                already_checked_in=False, expires_at=await _lot_expiry(conn, done.lot_id),
                tomorrow_bytes=streaks.reward(done.streak + 1, rules),
            )  # fmt: skip
    return CheckInResult(
        user_id=user_id, day=today, streak=done.streak, data_bytes=0, already_checked_in=True,
        expires_at=await _lot_expiry(conn, done.lot_id),
        tomorrow_bytes=streaks.reward(done.streak + 1, rules),
    )  # fmt: skip


async def _lot_expiry(conn: Connection, lot_id: int) -> datetime | None:
    lots = await ledger.lots_by_id(conn, [lot_id])
    return lots[lot_id].expires_at if lot_id in lots else None


async def allow_partner(conn: Connection, *, merchant_id: UUID, partner_id: UUID) -> None:
    """Let a partner platform send action events for the merchant's campaigns."""
    await repository.link_partner(conn, partner_id=partner_id, merchant_id=merchant_id)


async def revoke_partner(conn: Connection, *, merchant_id: UUID, partner_id: UUID) -> None:
    if not await repository.unlink_partner(conn, partner_id=partner_id, merchant_id=merchant_id):
        raise PartnerNotLinked(f"partner {partner_id} does not act for you")
