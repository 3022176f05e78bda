-- depends: 0007.wallet_take
-- IoT cards sold by merchants: card inventory imported from carriers, wholesale plans and
-- merchants' retail prices, orders paid through the payment gateway, real-name verification,
-- the card lifecycle as commands with a history, usage thresholds and electronic invoices.
-- Money is booked in the wallet's ledger (merchant revenue and the platform's wholesale);
-- these tables say what was sold, to whom, and why.

-- The seller on a merchant's invoices.
CREATE TABLE iot_merchant_profiles (
    merchant_id uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    seller_name text NOT NULL CHECK (length(seller_name) BETWEEN 1 AND 200),
    tax_id      text NOT NULL CHECK (tax_id ~ '^[0-9A-HJ-NPQRTUWXY]{18}$'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE iot_import_batches (
    batch_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    carrier     text NOT NULL CHECK (carrier ~ '^[a-z0-9-]{2,40}$'),
    label       text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    cards       integer NOT NULL CHECK (cards > 0),
    imported_by uuid NOT NULL REFERENCES tenants (tenant_id),
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE iot_wholesale_plans (
    plan_id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- monthly: data_bytes in every calendar month (Asia/Shanghai) for `months` months;
    -- top_up: data_bytes once, in the month it is bought.
    kind            text NOT NULL CHECK (kind IN ('monthly', 'top_up')),
    data_bytes      bigint NOT NULL CHECK (data_bytes > 0),
    months          integer NOT NULL CHECK (months BETWEEN 1 AND 36),
    wholesale_minor bigint NOT NULL CHECK (wholesale_minor > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'monthly' OR months = 1)
);

-- A merchant's retail price for a wholesale plan (never below it: checked under the plan's
-- lock). Pooled plans share their data across all of the merchant's cards on the plan.
CREATE TABLE iot_merchant_plans (
    merchant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    plan_id      uuid NOT NULL REFERENCES iot_wholesale_plans (plan_id),
    retail_minor bigint NOT NULL CHECK (retail_minor > 0),
    pooled       boolean NOT NULL DEFAULT false,
    on_sale      boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, plan_id)
);

CREATE TABLE iot_cards (
    iccid            text PRIMARY KEY CHECK (iccid ~ '^[0-9]{19,20}$'),
    imsi             text NOT NULL UNIQUE CHECK (imsi ~ '^[0-9]{15}$'),
    msisdn           text NOT NULL UNIQUE CHECK (msisdn ~ '^[0-9]{11,13}$'),
    batch_id         uuid NOT NULL REFERENCES iot_import_batches (batch_id),
    merchant_id      uuid REFERENCES tenants (tenant_id),
    state            text NOT NULL DEFAULT 'inventory' CHECK (state IN (
        'inventory', 'sold', 'pending_verification', 'active', 'suspended', 'blocked',
        'terminated')),
    -- Why the system blocks the card ('quota_exhausted', 'imei_mismatch'); it unblocks
    -- itself when the set is empty again.
    block_reasons    text[] NOT NULL DEFAULT '{}',
    suspended_by     text CHECK (suspended_by IN ('merchant', 'holder')),
    holder_id        uuid REFERENCES tenants (tenant_id),
    plan_id          uuid REFERENCES iot_wholesale_plans (plan_id),
    imei             text CHECK (imei ~ '^[0-9]{15}$'),
    last_imei        text CHECK (last_imei ~ '^[0-9]{15}$'),
    verification_id  uuid,
    activated_at     timestamptz,
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (state = 'inventory' OR merchant_id IS NOT NULL)
);
CREATE INDEX iot_cards_stock_idx ON iot_cards (merchant_id, iccid) WHERE state = 'inventory';
CREATE INDEX iot_cards_merchant_idx ON iot_cards (merchant_id, state);
CREATE INDEX iot_cards_holder_idx ON iot_cards (holder_id) WHERE holder_id IS NOT NULL;
CREATE INDEX iot_cards_pool_idx ON iot_cards (merchant_id, plan_id)
    WHERE state IN ('active', 'blocked', 'suspended');

-- Every state change of a card, and changes scheduled for later (applied_at IS NULL).
CREATE TABLE iot_card_history (
    history_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    iccid        text NOT NULL REFERENCES iot_cards (iccid),
    command      text NOT NULL,
    from_state   text,
    to_state     text,
    actor        text NOT NULL CHECK (actor IN ('operator', 'merchant', 'holder', 'system')),
    reason       text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    -- "<tenant>:<command>:<Idempotency-Key>": a repeat finds this row instead of acting.
    command_key  text UNIQUE CHECK (length(command_key) <= 300),
    effective_at timestamptz NOT NULL,
    applied_at   timestamptz,
    -- 'applied', 'scheduled', or 'skipped' (a scheduled change no longer allowed when due).
    status       text NOT NULL DEFAULT 'applied' CHECK (status IN ('applied', 'scheduled', 'skipped')),
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX iot_card_history_card_idx ON iot_card_history (iccid, history_id);
CREATE INDEX iot_card_history_due_idx ON iot_card_history (effective_at) WHERE status = 'scheduled';
CREATE INDEX iot_card_history_applied_idx ON iot_card_history (applied_at) WHERE status = 'applied';

-- How many live cards each resident ID number holds, by keyed hash: at most 10 across all
-- merchants. The row lock of an increment serialises concurrent verifications of one ID.
CREATE TABLE iot_id_holders (
    id_hash bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    cards   integer NOT NULL CHECK (cards BETWEEN 0 AND 10)
);

-- Real-name verification: never the name or ID number, only masked forms and the keyed hash.
CREATE TABLE iot_verifications (
    verification_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    iccid           text NOT NULL REFERENCES iot_cards (iccid),
    holder_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    merchant_id     uuid NOT NULL REFERENCES tenants (tenant_id),
    id_hash         bytea NOT NULL CHECK (length(id_hash) = 32),
    id_masked       text NOT NULL,
    name_masked     text NOT NULL,
    phone_masked    text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'verified', 'rejected')),
    reason          text,
    -- Whether this verification still holds one of the ID's ten card slots.
    holds_slot      boolean NOT NULL DEFAULT true,
    submitted_at    timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz
);
CREATE INDEX iot_verifications_card_idx ON iot_verifications (iccid, submitted_at);
CREATE INDEX iot_verifications_open_idx ON iot_verifications (submitted_at) WHERE state = 'pending';

CREATE TABLE iot_orders (
    order_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) <= 300),
    kind            text NOT NULL CHECK (kind IN ('purchase', 'recharge')),
    merchant_id     uuid NOT NULL REFERENCES tenants (tenant_id),
    buyer_id        uuid NOT NULL REFERENCES tenants (tenant_id),
    iccid           text NOT NULL REFERENCES iot_cards (iccid),
    plan_id         uuid NOT NULL REFERENCES iot_wholesale_plans (plan_id),
    plan_kind       text NOT NULL,
    plan_name       text NOT NULL,
    data_bytes      bigint NOT NULL CHECK (data_bytes > 0),
    months          integer NOT NULL CHECK (months > 0),
    retail_minor    bigint NOT NULL CHECK (retail_minor > 0),
    wholesale_minor bigint NOT NULL CHECK (wholesale_minor > 0 AND wholesale_minor <= retail_minor),
    currency        text NOT NULL,
    -- Who the invoice names: a company's title and tax id, or a person ("个人").
    invoice_title   text NOT NULL,
    invoice_tax_id  text,
    state           text NOT NULL DEFAULT 'placed' CHECK (state IN (
        'placed', 'paid', 'failed', 'refunding', 'refunded')),
    reason          text,
    payment_ref     text,
    merchant_txn_id bigint,
    platform_txn_id bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    paid_at         timestamptz
);
CREATE INDEX iot_orders_merchant_idx ON iot_orders (merchant_id, created_at);
CREATE INDEX iot_orders_buyer_idx ON iot_orders (buyer_id, created_at);
CREATE INDEX iot_orders_open_idx ON iot_orders (created_at) WHERE state = 'placed';
CREATE INDEX iot_orders_paid_idx ON iot_orders (merchant_id, paid_at) WHERE paid_at IS NOT NULL;

-- Data a paid order puts on a card: monthly terms (month-aligned) or a one-month top-up.
CREATE TABLE iot_card_grants (
    grant_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    uuid NOT NULL UNIQUE REFERENCES iot_orders (order_id),
    iccid       text NOT NULL REFERENCES iot_cards (iccid),
    data_bytes  bigint NOT NULL CHECK (data_bytes > 0),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    cancelled   boolean NOT NULL DEFAULT false
);
CREATE INDEX iot_card_grants_card_idx ON iot_card_grants (iccid, ends_at);

-- A whole-order refund: money back through the gateway, books reversed, a red-letter invoice.
CREATE TABLE iot_refunds (
    refund_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id        uuid NOT NULL UNIQUE REFERENCES iot_orders (order_id),
    idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) <= 300),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    reason          text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'refunded', 'failed')),
    failure         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz
);
CREATE INDEX iot_refunds_open_idx ON iot_refunds (created_at) WHERE state = 'pending';

CREATE TABLE iot_invoices (
    invoice_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id            uuid NOT NULL REFERENCES iot_orders (order_id),
    merchant_id         uuid NOT NULL REFERENCES tenants (tenant_id),
    buyer_id            uuid NOT NULL REFERENCES tenants (tenant_id),
    -- blue: an ordinary invoice; red: the red-letter invoice that cancels a blue one.
    colour              text NOT NULL CHECK (colour IN ('blue', 'red')),
    original_invoice_id uuid REFERENCES iot_invoices (invoice_id),
    number              text UNIQUE CHECK (number ~ '^[0-9]{20}$'),
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'issued')),
    -- The invoice as issued (seller, buyer, lines, amounts, tax); amounts in minor units.
    document            jsonb NOT NULL,
    issued_at           timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, colour),
    CHECK ((colour = 'red') = (original_invoice_id IS NOT NULL)),
    CHECK ((state = 'issued') = (number IS NOT NULL))
);
CREATE INDEX iot_invoices_open_idx ON iot_invoices (created_at) WHERE state = 'pending';
CREATE INDEX iot_invoices_merchant_idx ON iot_invoices (merchant_id, created_at);

-- A merchant's usage thresholds: a percentage of the quota, or an absolute amount.
CREATE TABLE iot_usage_thresholds (
    threshold_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    percent      integer CHECK (percent BETWEEN 1 AND 100),
    bytes        bigint CHECK (bytes > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((percent IS NULL) <> (bytes IS NULL))
);
CREATE UNIQUE INDEX iot_usage_thresholds_unique_idx
    ON iot_usage_thresholds (merchant_id, coalesce(percent, 0), coalesce(bytes, 0));

-- Threshold crossings, exactly once per subject (a card, or a merchant's pool), threshold
-- and period; delivered_at is set by whoever sends the merchant's webhook.
CREATE TABLE iot_usage_alerts (
    alert_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    subject      text NOT NULL,
    iccids       text[] NOT NULL,
    threshold_id uuid NOT NULL REFERENCES iot_usage_thresholds (threshold_id) ON DELETE CASCADE,
    period       date NOT NULL,
    used_bytes   bigint NOT NULL,
    quota_bytes  bigint NOT NULL,
    crossed_at   timestamptz NOT NULL,
    delivered_at timestamptz,
    UNIQUE (subject, threshold_id, period)
);
CREATE INDEX iot_usage_alerts_pending_idx ON iot_usage_alerts (alert_id) WHERE delivered_at IS NULL;
