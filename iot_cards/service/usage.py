"""Data use against the plans: a card's usage this month from the metered data, the sweep
that blocks cards whose quota is used up, and merchants' thresholds with the alerts they
raise (handed to the webhook queue)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from flowbill import metrics, paging
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.periods import Calendar, format_period
from flowbill.units import MB
from ingest import service as ingest
from iot_cards.errors import ThresholdNotFound
from iot_cards.repository import cards as card_rows
from iot_cards.repository import usage as repository
from iot_cards.repository.usage import LiveCard, ThresholdRow
from iot_cards.schemas import (
    AppUsage,
    SweepReport,
    ThresholdCreate,
    ThresholdPublic,
    UsageAlert,
    UsagePublic,
)
from iot_cards.service import cards, commands
from iot_cards.service.cards import QUOTA_EXHAUSTED
from webhooks import service as webhooks

THRESHOLDS_SCOPE = "iot-thresholds"
ALERTS_SCOPE = "iot-usage-alerts"


async def card_usage(
    conn: Connection,
    *,
    iccid: str,
    now: datetime,
    calendar: Calendar,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
) -> UsagePublic:
    """Usage this month against the plan, per app, from the metered data."""
    card = await cards.find_card(conn, iccid, merchant_id=merchant_id, holder_id=holder_id)
    month = calendar.period_of(now)
    since, until = calendar.start(month), calendar.end(month)
    by_app: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for hour in await ingest.hourly_usage(conn, iccid=iccid, since=since, until=until):
        by_app[hour.app][0] += hour.up_bytes
        by_app[hour.app][1] += hour.down_bytes
    used = sum(up + down for up, down in by_app.values())
    quota = (await repository.quotas(conn, [iccid], period_start=since)).get(iccid, 0)
    mates = [
        c
        for c in await repository.live_cards(conn, [iccid])
        if c.pooled and c.plan_id == card.plan_id and c.merchant_id == card.merchant_id
    ]
    pooled = bool(mates)
    pool_ids = [c.iccid for c in mates] or [iccid]
    pool_used = sum(
        (await ingest.usage_totals(conn, iccids=pool_ids, since=since, until=until)).values()
    )
    pool_quota = sum((await repository.quotas(conn, pool_ids, period_start=since)).values())
    return UsagePublic(
        iccid=iccid,
        period=format_period(month),
        period_start=since,
        period_end=until,
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
    conn: Connection,
    *,
    now: datetime,
    calendar: Calendar,
    iccids: list[str] | None = None,
) -> UsageOutcome:
    """Judge activated cards' usage this month against their plans (a pooled plan's cards
    together): record each threshold crossing once, and block cards whose quota is used up
    (unblocking those whose quota came back). All cards when `iccids` is None."""
    live = await repository.live_cards(conn, iccids)
    if not live:
        return UsageOutcome(0, 0, 0, 0)
    month = calendar.period_of(now)
    since, until = calendar.start(month), calendar.end(month)
    ids = [c.iccid for c in live]
    quota = await repository.quotas(conn, ids, period_start=since)
    used = await ingest.usage_totals(conn, iccids=ids, since=since, until=until)
    groups: dict[str, list[LiveCard]] = defaultdict(list)
    for card in live:
        groups[f"pool:{card.plan_id}" if card.pooled else card.iccid].append(card)
    thresholds_by_merchant: dict[UUID, list[ThresholdRow]] = defaultdict(list)
    for threshold in await repository.thresholds_of(conn, list({c.merchant_id for c in live})):
        thresholds_by_merchant[threshold.merchant_id].append(threshold)
    blocked = unblocked = alerts = 0
    for subject, members in groups.items():
        merchant_id = members[0].merchant_id
        group_quota = sum(quota.get(c.iccid, 0) for c in members)
        group_used = sum(used.get(c.iccid, 0) for c in members)
        for threshold in thresholds_by_merchant[merchant_id]:
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
                    period=month,
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
            locked = await card_rows.get_card(conn, member.iccid, lock=True)
            assert locked is not None
            reasons = set(locked.block_reasons)
            if exhausted:
                reasons.add(QUOTA_EXHAUSTED)
            else:
                reasons.discard(QUOTA_EXHAUSTED)
            _, change = await cards.set_block_reasons(conn, locked, reasons, now=now)
            blocked += change == "blocked"
            unblocked += change == "unblocked"
    return UsageOutcome(len(live), blocked, unblocked, alerts)


async def sweep(conn: Connection, *, now: datetime, calendar: Calendar) -> SweepReport:
    """The periodic job: apply due scheduled commands, then judge every card's usage."""
    applied, skipped = await commands.apply_scheduled(conn, now=now)
    outcome = await evaluate_usage(conn, now=now, calendar=calendar)
    return SweepReport(
        scheduled_applied=applied,
        scheduled_skipped=skipped,
        cards_evaluated=outcome.evaluated,
        blocked=outcome.blocked,
        unblocked=outcome.unblocked,
        alerts=outcome.alerts,
    )


async def add_threshold(
    conn: Connection, *, merchant_id: UUID, body: ThresholdCreate
) -> ThresholdPublic:
    """Alert when a card (or a pool) crosses a share of its monthly quota or an amount."""
    data_bytes = None if body.mb is None else body.mb * MB
    row = await repository.insert_threshold(
        conn, merchant_id=merchant_id, percent=body.percent, data_bytes=data_bytes
    )
    if row is None:
        row = next(
            t
            for t in await repository.thresholds_of(conn, [merchant_id])
            if t.percent == body.percent and t.bytes == data_bytes
        )
    return ThresholdPublic.model_validate(row)


async def thresholds(
    conn: Connection, *, merchant_id: UUID, cursor: str | None, limit: int
) -> Page[ThresholdPublic]:
    """One page of the merchant's usage thresholds, oldest first."""
    after = (
        None
        if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope=THRESHOLDS_SCOPE)
    )
    rows = await repository.thresholds_of(conn, [merchant_id], after=after, limit=limit)
    found = paging.page(
        rows, limit=limit, key=lambda t: (t.created_at, t.threshold_id), scope=THRESHOLDS_SCOPE
    )
    return Page[ThresholdPublic].model_validate(found, from_attributes=True)


async def remove_threshold(conn: Connection, *, merchant_id: UUID, threshold_id: UUID) -> None:
    """Remove one of the merchant's thresholds (and its alerts)."""
    if not await repository.delete_threshold(
        conn, merchant_id=merchant_id, threshold_id=threshold_id
    ):
        raise ThresholdNotFound(f"no threshold {threshold_id}")


async def pending_usage_alerts(
    conn: Connection, *, limit: int = 100, merchant_id: UUID | None = None
) -> list[UsageAlert]:
    """Threshold crossings not yet delivered, oldest first, locked for this transaction
    (concurrent senders skip each other's). Send each as a signed webhook to its merchant
    (event type "card.usage_threshold_reached", id `alert_id`), then call
    `mark_usage_alerts_delivered` in the same transaction."""
    return [
        UsageAlert.model_validate(r)
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


async def mark_usage_alerts_delivered(
    conn: Connection, alert_ids: list[int], *, now: datetime
) -> int:
    """Record that these alerts were delivered; returns how many were still pending."""
    return await repository.mark_delivered(conn, alert_ids, now=now)


async def usage_alerts(
    conn: Connection, *, merchant_id: UUID, cursor: str | None, limit: int
) -> Page[UsageAlert]:
    """One page of the thresholds the merchant's cards crossed, newest first."""
    before = None if cursor is None else paging.decode_cursor(cursor, (int,), scope=ALERTS_SCOPE)[0]
    rows = await repository.alerts_of(conn, merchant_id, before=before, limit=limit)
    found = paging.page(rows, limit=limit, key=lambda a: (a.alert_id,), scope=ALERTS_SCOPE)
    return Page[UsageAlert].model_validate(found, from_attributes=True)
