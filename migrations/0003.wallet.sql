-- depends: 0002.metering
-- The wallet's double-entry ledger: two assets (data in bytes, money in minor units of a
-- currency), expiring lots of data in users' wallets, and every movement a balanced
-- transaction with an idempotency key.

CREATE TABLE ledger_accounts (
    account_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text   NOT NULL CHECK (kind IN (
        'user_wallet', 'merchant_pool', 'merchant_payments', 'platform_data',
        'platform_revenue', 'carrier', 'breakage', 'exchange')),
    owner      text   NOT NULL CHECK (length(owner) BETWEEN 1 AND 200),
    asset      text   NOT NULL CHECK (asset ~ '^(data|[A-Z]{3})$'),
    -- Cached sum of the account's entries (`flowbill ledger check` proves it).
    balance    bigint NOT NULL DEFAULT 0,
    UNIQUE (kind, owner, asset),
    -- Accounts that hold something for someone never go below zero; the others stand for
    -- outside parties or the platform's own position and may.
    CHECK (balance >= 0 OR kind IN ('merchant_payments', 'platform_data', 'carrier', 'exchange'))
);

CREATE TABLE ledger_transactions (
    txn_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text   NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    kind            text   NOT NULL,
    -- What was asked: a repeat of the key with another request is refused, not replayed.
    request_digest  bytea  NOT NULL,
    reverses_txn_id bigint REFERENCES ledger_transactions (txn_id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_transactions_reverses_idx ON ledger_transactions (reverses_txn_id)
    WHERE reverses_txn_id IS NOT NULL;

CREATE TABLE wallet_lots (
    lot_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES ledger_accounts (account_id),
    source         text   NOT NULL CHECK (length(source) BETWEEN 1 AND 200),
    funded_by      bigint REFERENCES ledger_accounts (account_id),
    granted        bigint NOT NULL CHECK (granted > 0),
    remaining      bigint NOT NULL CHECK (remaining >= 0 AND remaining <= granted),
    expires_at     timestamptz NOT NULL,
    created_txn_id bigint NOT NULL REFERENCES ledger_transactions (txn_id),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_lots_spendable_idx ON wallet_lots (account_id, expires_at, lot_id)
    WHERE remaining > 0;
CREATE INDEX wallet_lots_expiry_idx ON wallet_lots (expires_at) WHERE remaining > 0;

CREATE TABLE ledger_entries (
    entry_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id     bigint NOT NULL REFERENCES ledger_transactions (txn_id),
    account_id bigint NOT NULL REFERENCES ledger_accounts (account_id),
    asset      text   NOT NULL,
    amount     bigint NOT NULL CHECK (amount <> 0),
    -- For data entries of a wallet (and of breakage): the lot the bytes came from or went to.
    lot_id     bigint REFERENCES wallet_lots (lot_id)
);
CREATE INDEX ledger_entries_txn_idx ON ledger_entries (txn_id);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, entry_id);
CREATE INDEX ledger_entries_lot_idx ON ledger_entries (lot_id) WHERE lot_id IS NOT NULL;
