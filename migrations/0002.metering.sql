-- depends: 0001.tenants
-- Metering: device reports, per-app usage items, hourly rollups, sequence tracking, rejects.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- SIMs the platform knows. Reports from other ICCIDs are still stored (and counted as
-- unprovisioned), so provisioning a SIM later loses nothing.
CREATE TABLE sims (
    iccid          text PRIMARY KEY CHECK (iccid ~ '^[0-9]{19,20}$'),
    label          text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    provisioned_at timestamptz NOT NULL DEFAULT now()
);

-- One row per device report: the dedup key. A report is (iccid, boot, seq) for its window;
-- the window start is part of the key because the table is partitioned by it, which keeps
-- each chunk's unique index small and lets retention drop whole chunks.
CREATE TABLE usage_reports (
    iccid        text        NOT NULL,
    boot         integer     NOT NULL CHECK (boot >= 0),
    seq          bigint      NOT NULL CHECK (seq >= 0),
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    apps         smallint    NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (iccid, boot, seq, window_start),
    CHECK (window_end > window_start AND window_end - window_start <= interval '1 hour')
);
DO $$ BEGIN PERFORM create_hypertable('usage_reports', 'window_start',
                         chunk_time_interval => interval '1 day',
                         create_default_indexes => false); END $$;

-- One row per SIM x app x window, uplink and downlink side by side. No unique index:
-- deduplication is per report (above), which is what makes bulk writes cheap.
CREATE TABLE usage_items (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    iccid        text        NOT NULL,
    boot         integer     NOT NULL,
    seq          bigint      NOT NULL,
    app          text        NOT NULL,
    up_bytes     bigint      NOT NULL CHECK (up_bytes >= 0),
    down_bytes   bigint      NOT NULL CHECK (down_bytes >= 0),
    received_at  timestamptz NOT NULL
);
DO $$ BEGIN PERFORM create_hypertable('usage_items', 'window_start',
                         chunk_time_interval => interval '1 day',
                         create_default_indexes => false); END $$;
CREATE INDEX usage_items_iccid_idx ON usage_items (iccid, window_start DESC);

-- Hourly per-SIM, per-app rollup (UTC hours, by window start). Each committed batch appends
-- its sums; compaction merges an hour's rows into one. The rollup is always the SUM over
-- its rows for a key, so it is exact at every commit, and survives raw-data retention.
CREATE TABLE usage_hourly (
    hour       timestamptz NOT NULL,
    iccid      text        NOT NULL,
    app        text        NOT NULL,
    up_bytes   bigint      NOT NULL,
    down_bytes bigint      NOT NULL,
    items      bigint      NOT NULL
);
DO $$ BEGIN PERFORM create_hypertable('usage_hourly', 'hour',
                         chunk_time_interval => interval '30 days',
                         create_default_indexes => false); END $$;
CREATE INDEX usage_hourly_iccid_idx ON usage_hourly (iccid, hour DESC);

-- Sequence numbers seen per device boot: missing = span - reports received.
CREATE TABLE sim_boots (
    iccid      text        NOT NULL,
    boot       integer     NOT NULL,
    first_seq  bigint      NOT NULL,
    last_seq   bigint      NOT NULL,
    reports    bigint      NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (iccid, boot)
);

-- What could not be stored as usage, with the raw bytes (up to 64 KiB) and the reason.
CREATE TABLE ingest_rejects (
    reject_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text        NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL,
    payload      bytea       NOT NULL,
    payload_size integer     NOT NULL
);
CREATE INDEX ingest_rejects_reason_idx ON ingest_rejects (reason, received_at DESC);
CREATE INDEX ingest_rejects_time_idx ON ingest_rejects (received_at DESC);
