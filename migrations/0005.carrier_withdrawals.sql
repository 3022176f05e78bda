-- depends: 0004.wallet_promotions
-- Data out of the wallet to a carrier (top-up of a phone number) and into it from a carrier
-- (transfer-in of unused in-plan data). Each is an order that moves through a carrier's
-- gateway: reserved → submitted → confirmed | failed. A full phone number is never stored.

CREATE TABLE carriers (
    carrier_id     text PRIMARY KEY CHECK (carrier_id ~ '^[a-z0-9][a-z0-9-]{1,39}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The standard packages the carrier sells, in MB.
    package_mb     integer[] NOT NULL CHECK (cardinality(package_mb) BETWEEN 1 AND 50),
    min_package_mb integer NOT NULL CHECK (min_package_mb > 0),
    transfer_in    boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE carrier_orders (
    order_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    direction       text NOT NULL CHECK (direction IN ('top_up', 'transfer_in')),
    user_id         text NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    carrier_id      text NOT NULL REFERENCES carriers (carrier_id),
    msisdn_masked   text NOT NULL,
    data_mb         integer NOT NULL CHECK (data_mb > 0),
    state           text NOT NULL CHECK (state IN ('reserved', 'submitted', 'confirmed', 'failed')),
    reason          text,
    carrier_ref     text,
    reserve_txn_id  bigint REFERENCES ledger_transactions (txn_id),
    settle_txn_id   bigint REFERENCES ledger_transactions (txn_id),
    lot_id          bigint REFERENCES wallet_lots (lot_id),
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX carrier_orders_user_idx ON carrier_orders (user_id, created_at);
CREATE INDEX carrier_orders_open_idx ON carrier_orders (updated_at)
    WHERE state IN ('reserved', 'submitted');
