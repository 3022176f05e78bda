-- depends: 0008.sponsors
-- Billing: tariffs, the allocation run's cursor, allocation rows and the coverage state.

-- The operator's tariff from a point in time: what the carrier charges us, what a user pays
-- for overage, and how bytes are rounded when rated (to a unit, per item or per line).
CREATE TABLE tariffs (
    effective_from      timestamptz PRIMARY KEY,
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    wholesale_per_mb    numeric(14, 6) NOT NULL CHECK (wholesale_per_mb >= 0),
    overage_per_mb      numeric(14, 6) NOT NULL CHECK (overage_per_mb >= 0),
    rounding_unit_bytes bigint NOT NULL CHECK (rounding_unit_bytes BETWEEN 1 AND 1073741824),
    rounding_scope      text NOT NULL CHECK (rounding_scope IN ('item', 'line')),
    created_at          timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tariffs (effective_from, currency, wholesale_per_mb, overage_per_mb,
                     rounding_unit_bytes, rounding_scope)
VALUES ('2000-01-01T00:00:00Z', 'CNY', 0.0300, 0.2900, 1024, 'item');

-- The transaction that stored each usage item. Everything below the oldest transaction still
-- running is final, so the allocation run reads the items of transactions in
-- [cursor, oldest running) and can never miss one that commits late. Items stored before this
-- migration get its transaction's id, and so are allocated by the first run.
ALTER TABLE usage_items
    ADD COLUMN ingest_xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
-- Rows are appended in transaction order: a block range index is tiny and cheap to keep.
CREATE INDEX usage_items_ingest_xid_idx ON usage_items USING brin (ingest_xid)
    WITH (pages_per_range = 16, autosummarize = on);

CREATE TABLE billing_cursor (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    next_xid   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO billing_cursor (next_xid) VALUES (0);

CREATE TABLE billing_batches (
    batch_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_xid    bigint NOT NULL,
    to_xid      bigint NOT NULL,
    items       integer NOT NULL,
    allocations integer NOT NULL,
    bytes       bigint NOT NULL,
    adjustments integer NOT NULL,
    oldest_received_at timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now()
);

-- Who pays for each usage item: one row per payer of the item (a sponsor's policy, the
-- user's wallet, or overage), naming the item by its report and app. An item's rows sum to
-- its bytes. `period` is the billing month the row is booked in: the month of use, or, for
-- an item that arrived after that month's closing window, the month it was allocated in.
CREATE TABLE allocations (
    window_start timestamptz NOT NULL,
    iccid        text NOT NULL,
    boot         integer NOT NULL,
    seq          bigint NOT NULL,
    app          text NOT NULL,
    category     text NOT NULL,
    period       date NOT NULL,
    payer_kind   text NOT NULL CHECK (payer_kind IN ('sponsor', 'wallet', 'overage')),
    -- The sponsor (payer_kind sponsor) or the driver (wallet, overage); NULL: overage of a
    -- SIM that no driver owns.
    payer_id     uuid,
    policy_id    bigint,
    terms_from   timestamptz,
    bytes        bigint NOT NULL CHECK (bytes > 0),
    adjustment   boolean NOT NULL,
    batch_id     bigint NOT NULL,
    CHECK ((payer_kind = 'sponsor') = (policy_id IS NOT NULL))
);
DO $$ BEGIN PERFORM create_hypertable('allocations', 'window_start',
                         chunk_time_interval => interval '7 days',
                         create_default_indexes => false); END $$;
-- Statements and their drill-down (keyset pages in item order within a line), and reports
-- over a whole month.
CREATE INDEX allocations_payer_idx
    ON allocations (payer_id, period, policy_id, window_start, iccid, boot, seq, app);
CREATE INDEX allocations_period_idx ON allocations (period);
CREATE INDEX allocations_item_idx ON allocations (iccid, window_start, boot, seq);

-- Daily totals per SIM, app and payer (days in the billing time zone), appended by each batch
-- in the same transaction as the rows they sum, and merged by the run's compaction (as
-- usage_hourly is): a total is always the SUM over its rows. Pages and charts read these.
CREATE TABLE allocation_daily (
    day        date NOT NULL,
    iccid      text NOT NULL,
    app        text NOT NULL,
    category   text NOT NULL,
    payer_kind text NOT NULL,
    payer_id   uuid,
    bytes      bigint NOT NULL,
    items      bigint NOT NULL
);
CREATE INDEX allocation_daily_sim_idx ON allocation_daily (iccid, day);
CREATE INDEX allocation_daily_day_idx ON allocation_daily (day);

-- Per SIM and app, how much of the user's share each batch drew from the wallet: the
-- wallet transactions behind the rows (one transaction per driver per batch).
CREATE TABLE wallet_draws (
    batch_id  bigint NOT NULL,
    driver_id uuid NOT NULL,
    bytes     bigint NOT NULL CHECK (bytes > 0),
    txn_id    bigint NOT NULL,
    PRIMARY KEY (batch_id, driver_id)
);

-- The retained coverage message last published per SIM.
CREATE TABLE sim_coverage (
    iccid        text PRIMARY KEY,
    payload      jsonb NOT NULL,
    published_at timestamptz,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
