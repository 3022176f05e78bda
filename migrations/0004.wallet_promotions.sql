-- depends: 0003.wallet
-- What fills wallets: the platform's data price, merchants' campaigns, partner platforms'
-- action events and the embeddable check-in tool.

-- Partner platforms (service vendors running promotions for many merchants) and embedding
-- apps (which host the check-in tool) are callers of their own.
ALTER TABLE tenants DROP CONSTRAINT tenants_role_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_role_check
    CHECK (role IN ('operator', 'sponsor', 'merchant', 'driver', 'partner', 'app'));

-- New ledger accounts: a campaign's budget (drawn from its merchant's pool), data held while
-- a carrier or the exchange works on it, and money users pay for the exchange.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check CHECK (kind IN (
    'user_wallet', 'merchant_pool', 'merchant_payments', 'platform_data', 'platform_revenue',
    'carrier', 'breakage', 'exchange', 'campaign', 'in_flight', 'user_payments'));
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_check CHECK (
    balance >= 0
    OR kind IN ('merchant_payments', 'platform_data', 'carrier', 'exchange', 'user_payments'));
ALTER TABLE ledger_transactions ADD COLUMN memo jsonb NOT NULL DEFAULT '{}';
CREATE INDEX ledger_transactions_created_idx ON ledger_transactions (created_at);

-- The wholesale price merchants pay for data, per currency (operator configuration).
CREATE TABLE data_prices (
    currency        text PRIMARY KEY CHECK (currency ~ '^[A-Z]{3}$'),
    minor_per_100mb bigint NOT NULL CHECK (minor_per_100mb > 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO data_prices (currency, minor_per_100mb) VALUES ('CNY', 600);

-- A merchant lets a partner platform send action events for its campaigns.
CREATE TABLE partner_links (
    partner_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    merchant_id uuid NOT NULL REFERENCES tenants (tenant_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, merchant_id)
);

CREATE TABLE campaigns (
    campaign_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id      uuid NOT NULL REFERENCES tenants (tenant_id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    action           text NOT NULL CHECK (action IN (
        'favourite_shop', 'share_link', 'add_to_cart', 'purchase', 'check_in')),
    bytes_per_action bigint NOT NULL CHECK (bytes_per_action > 0),
    -- share_link: what the person who clicks the shared link receives.
    bytes_per_click  bigint NOT NULL DEFAULT 0 CHECK (bytes_per_click >= 0),
    per_user_limit   integer CHECK (per_user_limit > 0),
    validity_days    integer NOT NULL CHECK (validity_days BETWEEN 1 AND 730),
    budget_bytes     bigint NOT NULL CHECK (budget_bytes > 0),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz,
    ended_at         timestamptz,
    -- The transaction that moved the budget from the merchant's pool (its key is the
    -- creating request's): a repeat of the request finds the campaign through it.
    budget_txn_id    bigint NOT NULL UNIQUE REFERENCES ledger_transactions (txn_id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at > starts_at),
    CHECK (action = 'share_link' OR bytes_per_click = 0)
);
CREATE INDEX campaigns_merchant_idx ON campaigns (merchant_id, created_at);
CREATE INDEX campaigns_check_in_idx ON campaigns (starts_at) WHERE action = 'check_in'
    AND ended_at IS NULL;

-- How many rewards each user has had from a campaign (its per-user limit).
CREATE TABLE campaign_rewards (
    campaign_id uuid    NOT NULL REFERENCES campaigns (campaign_id),
    user_id     text    NOT NULL,
    rewards     integer NOT NULL CHECK (rewards > 0),
    PRIMARY KEY (campaign_id, user_id)
);

-- Every granted action event, once: a repeat returns what the first delivery granted.
CREATE TABLE action_events (
    partner_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 200),
    campaign_id uuid NOT NULL REFERENCES campaigns (campaign_id),
    action      text NOT NULL,
    granted     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, event_id)
);

-- The check-in rules: a reward on every day of a streak, more on some days of the cycle.
CREATE TABLE check_in_rules (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cycle_days    integer NOT NULL CHECK (cycle_days BETWEEN 1 AND 366),
    daily_bytes   bigint  NOT NULL CHECK (daily_bytes > 0),
    -- {"3": 5242880, "7": 10485760}: the reward on those days of the streak's cycle.
    streak_bytes  jsonb   NOT NULL DEFAULT '{}',
    validity_days integer NOT NULL CHECK (validity_days BETWEEN 1 AND 730),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO check_in_rules (cycle_days, daily_bytes, streak_bytes, validity_days)
VALUES (7, 1048576, '{"3": 5242880, "7": 10485760}', 730);

CREATE TABLE check_ins (
    user_id     text    NOT NULL,
    -- The calendar day in Asia/Shanghai.
    day         date    NOT NULL,
    streak      integer NOT NULL CHECK (streak > 0),
    app_id      uuid    NOT NULL REFERENCES tenants (tenant_id),
    campaign_id uuid    NOT NULL REFERENCES campaigns (campaign_id),
    data_bytes  bigint  NOT NULL CHECK (data_bytes > 0),
    txn_id      bigint  NOT NULL REFERENCES ledger_transactions (txn_id),
    lot_id      bigint  NOT NULL REFERENCES wallet_lots (lot_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, day)
);
