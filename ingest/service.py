"""What the metering domain does: turn received messages into stored usage, exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flowbill import paging
from flowbill.db import Connection
from flowbill.errors import InvalidInput
from flowbill.paging import Page
from ingest import repository
from ingest.protocol import (
    MAX_PAYLOAD_BYTES,
    Rejection,
    RejectReason,
    iccid_from_topic,
    parse_report,
)
from ingest.schemas import (
    BootSequencePublic,
    HourlyUsagePublic,
    MissingRange,
    RejectPublic,
    UnprovisionedSimPublic,
)

_MAX_TOPIC_CHARS = 1024
_MAX_SIM_KEY_CHARS = 64


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    received_at: datetime


@dataclass(slots=True)
class BatchOutcome:
    messages: int = 0
    reports_stored: int = 0
    duplicates: int = 0
    items_stored: int = 0
    up_bytes: int = 0
    down_bytes: int = 0
    unprovisioned: int = 0
    missing_found: int = 0
    missing_recovered: int = 0
    # Of the rejected messages, how many were kept with their raw bytes (the rest counted).
    rejects_kept: int = 0
    rejected: Counter[RejectReason] = field(default_factory=Counter)


async def keep_rejects(
    conn: Connection, rejects: Sequence[repository.RejectRow], *, payloads_per_sim_hour: int
) -> int:
    """Count rejects per SIM and hour, and keep the first `payloads_per_sim_hour` of each
    SIM-hour (across batches and workers) with their raw bytes. Returns how many were kept."""
    groups: dict[tuple[str, datetime], list[repository.RejectRow]] = {}
    for row in rejects:
        hour = row.received_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        groups.setdefault((_reject_sim(row.topic), hour), []).append(row)
    totals = await repository.tally_rejects(
        conn,
        [repository.TallyRow(sim, hour, len(rows)) for (sim, hour), rows in groups.items()],
    )
    kept: list[repository.RejectRow] = []
    for key, rows in groups.items():
        after = totals[key]
        before = after - len(rows)
        room = min(payloads_per_sim_hour, after) - min(payloads_per_sim_hour, before)
        kept.extend(rows[:room])
    if kept:
        await repository.store_rejects(conn, kept)
    return len(kept)


def _reject_sim(topic: str) -> str:
    # The ICCID segment as the device sent it: a bad ICCID is still a sender to count.
    segment = iccid_from_topic(topic)
    return (segment or "")[:_MAX_SIM_KEY_CHARS].replace("\x00", "\ufffd")


def reject_row(message: ReceivedMessage, rejection: Rejection) -> repository.RejectRow:
    """The rejects-table row that keeps a message we could not store as usage."""
    # Postgres text cannot hold NUL; the topic is kept readable, the payload kept raw.
    topic = message.topic[:_MAX_TOPIC_CHARS].replace("\x00", "\ufffd")
    return repository.RejectRow(
        received_at=message.received_at,
        topic=topic,
        reason=rejection.reason.value,
        detail=rejection.detail[:1000],
        payload=message.payload[:MAX_PAYLOAD_BYTES],
        payload_size=len(message.payload),
    )


async def store_batch(
    conn: Connection,
    messages: Sequence[ReceivedMessage],
    *,
    max_clock_skew: timedelta,
    max_age: timedelta | None = None,
    reject_payloads_per_sim_hour: int = 20,
) -> BatchOutcome:
    """Validate and store one batch of messages in the caller's transaction.

    Good reports are stored once (a report already stored counts as a duplicate); every
    other message is counted per SIM and hour, and the first `reject_payloads_per_sim_hour`
    of each are kept in the rejects table with their reason and raw bytes. A window that
    starts more than `max_age` before receipt is `too_old` (None: no horizon). Nothing is
    committed here.
    """
    outcome = BatchOutcome(messages=len(messages))
    staged: dict[tuple[str, int, int, datetime], repository.StagedReport] = {}
    rejects: list[repository.RejectRow] = []
    for message in messages:
        parsed = parse_report(
            message.topic,
            message.payload,
            now=message.received_at,
            max_clock_skew=max_clock_skew,
            max_age=max_age,
        )
        if isinstance(parsed, Rejection):
            outcome.rejected[parsed.reason] += 1
            rejects.append(reject_row(message, parsed))
            continue
        key = (parsed.iccid, parsed.boot, parsed.seq, parsed.start)
        if key in staged:
            continue
        apps = parsed.apps
        staged[key] = repository.StagedReport(
            iccid=parsed.iccid,
            boot=parsed.boot,
            seq=parsed.seq,
            window_start=parsed.start,
            window_end=parsed.end,
            apps=[a.app for a in apps],
            ups=[a.up for a in apps],
            downs=[a.down for a in apps],
            received_at=message.received_at,
        )
    if rejects:
        outcome.rejects_kept = await keep_rejects(
            conn, rejects, payloads_per_sim_hour=reject_payloads_per_sim_hour
        )
    counts = await repository.store_reports(conn, list(staged.values()))
    accepted = outcome.messages - sum(outcome.rejected.values())
    outcome.reports_stored = counts.reports
    outcome.duplicates = accepted - counts.reports
    outcome.items_stored = counts.items
    outcome.up_bytes = counts.up_bytes
    outcome.down_bytes = counts.down_bytes
    outcome.unprovisioned = counts.unprovisioned
    outcome.missing_found = counts.missing_found
    outcome.missing_recovered = counts.missing_recovered
    return outcome


async def compact_rollups(conn: Connection, *, now: datetime, lookback: timedelta) -> int | None:
    """Merge the hourly rollup rows of closed hours; the sums do not change.

    Returns the rows merged away, or None when another process is compacting right now.
    """
    if not await repository.try_compaction_lock(conn):
        return None
    until = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return await repository.compact_hourly(conn, since=until - lookback, until=until)


@dataclass(frozen=True, slots=True)
class RetentionOutcome:
    chunks_dropped: list[str]
    rejects_deleted: int
    boots_deleted: int


async def apply_retention(
    conn: Connection,
    *,
    now: datetime,
    keep_raw: timedelta,
    keep_rejects: timedelta,
    ingest_horizon: timedelta,
) -> RetentionOutcome:
    """Drop raw usage older than `keep_raw` (whole chunks) with the sequence records of boots
    last heard from before then, and rejects older than `keep_rejects`; keep rollups.

    Raw usage must outlive the ingest horizon: a report still accepted must still find its
    stored copy, or a replay would be stored, and billed, twice."""
    if keep_raw < timedelta(days=1):
        raise ValueError("raw usage must be kept for at least one day")
    if keep_raw <= ingest_horizon:
        raise ValueError(
            f"raw usage must be kept longer than the ingest horizon ({ingest_horizon.days} days)"
        )
    cutoff = now - keep_raw
    chunks = await repository.drop_raw_chunks(conn, older_than=cutoff)
    boots = await repository.delete_boots(conn, last_seen_before=cutoff)
    deleted = await repository.delete_rejects(conn, older_than=now - keep_rejects)
    return RetentionOutcome(chunks_dropped=chunks, rejects_deleted=deleted, boots_deleted=boots)


async def provision_sims(conn: Connection, iccids: Sequence[str], *, label: str) -> int:
    """Register SIMs by ICCID; returns how many were not known before."""
    return await repository.provision_sims(conn, sorted(set(iccids)), label=label)


async def unprovisioned_sims(
    conn: Connection, *, limit: int, cursor: str | None
) -> Page[UnprovisionedSimPublic]:
    """ICCIDs that report usage but that no one has provisioned, most recently seen first,
    a page at a time."""
    after = paging.decode_cursor(cursor, (datetime, str), scope="unprovisioned") if cursor else None
    rows = await repository.list_unprovisioned(conn, after=after, limit=limit + 1)
    return paging.page(
        [UnprovisionedSimPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda s: (s.last_seen, s.iccid), scope="unprovisioned",
    )  # fmt: skip


async def rejects(
    conn: Connection, *, reason: RejectReason | None, limit: int, cursor: str | None
) -> Page[RejectPublic]:
    """Rejected messages, newest first, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (int,), scope="rejects") if cursor else (None,)
    rows = await repository.list_rejects(
        conn, reason=reason.value if reason else None, after=after, limit=limit + 1
    )
    return paging.page(
        [RejectPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda r: (r.reject_id,), scope="rejects",
    )  # fmt: skip


async def reject_counts(conn: Connection) -> dict[str, int]:
    """How many rejected messages are kept, per reason."""
    return await repository.count_rejects_by_reason(conn)


async def boots_with_gaps(
    conn: Connection, *, limit: int, cursor: str | None
) -> Page[BootSequencePublic]:
    """Device boots whose sequence numbers show lost reports, most recently seen first, a
    page at a time."""
    after = (
        paging.decode_cursor(cursor, (datetime, str, int), scope="boot-gaps") if cursor else None
    )
    rows = await repository.list_boots_with_gaps(conn, after=after, limit=limit + 1)
    return paging.page(
        [BootSequencePublic.model_validate(r) for r in rows],
        limit=limit, key=lambda b: (b.last_seen, b.iccid, b.boot), scope="boot-gaps",
    )  # fmt: skip


async def missing_reports(conn: Connection, *, iccid: str, boot: int) -> list[MissingRange]:
    """The runs of sequence numbers never received for one boot of one SIM."""
    return [
        MissingRange.model_validate(r)
        for r in await repository.missing_seq_ranges(conn, iccid=iccid, boot=boot)
    ]


def _check_window(since: datetime, until: datetime) -> None:
    if until <= since:
        raise InvalidInput("`until` must be after `since`")
    if until - since > timedelta(days=366):
        raise InvalidInput("ask for at most 366 days at once")


async def hourly_usage(
    conn: Connection, *, iccid: str, since: datetime, until: datetime
) -> list[repository.HourlyUsage]:
    """Per-app hourly usage of one SIM from the rollup (kept after raw data is dropped)."""
    _check_window(since, until)
    return await repository.hourly_usage(conn, iccid=iccid, since=since, until=until)


async def hourly_usage_page(
    conn: Connection,
    *,
    iccid: str,
    since: datetime,
    until: datetime,
    limit: int,
    cursor: str | None,
) -> Page[HourlyUsagePublic]:
    """Per-app hourly usage of one SIM from the rollup, by hour and app, a page at a time."""
    _check_window(since, until)
    after = paging.decode_cursor(cursor, (datetime, str), scope="hourly-usage") if cursor else None
    rows = await repository.hourly_usage(
        conn, iccid=iccid, since=since, until=until, after=after, limit=limit + 1
    )
    return paging.page(
        [HourlyUsagePublic.model_validate(r) for r in rows],
        limit=limit, key=lambda h: (h.hour, h.app), scope="hourly-usage",
    )  # fmt: skip


async def usage_totals(
    conn: Connection, *, iccids: Sequence[str], since: datetime, until: datetime
) -> dict[str, int]:
    """Bytes up and down per SIM in [since, until) from the hourly rollup (hour-aligned
    bounds); SIMs with no usage are left out."""
    return await repository.usage_totals(conn, iccids=iccids, since=since, until=until)
