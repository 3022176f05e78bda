-- depends: 0005.carrier_withdrawals
-- The exchange catalogue: items priced in MB with an optional money part, and orders that move
-- placed → paid → fulfilled, or failed → refunded, with returns (whole or partial) after.

CREATE TABLE catalogue_items (
    item_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind           text NOT NULL CHECK (kind IN (
        'red_envelope', 'phone_credit', 'membership', 'fuel_card', 'merchant_goods')),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    sku            text NOT NULL CHECK (length(sku) BETWEEN 1 AND 100),
    price_bytes    bigint NOT NULL CHECK (price_bytes > 0),
    -- Per carrier (of the user's phone number) MB prices overriding price_bytes: red envelope
    -- tiers cost 50, 100 or 200 MB depending on the carrier.
    carrier_prices jsonb NOT NULL DEFAULT '{}',
    price_minor    bigint NOT NULL DEFAULT 0 CHECK (price_minor >= 0),
    currency       text NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    -- The seller of merchant goods, who receives the money part and ships the goods.
    merchant_id    uuid REFERENCES tenants (tenant_id),
    stock          integer CHECK (stock >= 0),
    per_user_limit integer CHECK (per_user_limit > 0),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'merchant_goods') = (merchant_id IS NOT NULL))
);

CREATE TABLE exchange_orders (
    order_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           text NOT NULL,
    idempotency_key   text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    item_id           uuid NOT NULL REFERENCES catalogue_items (item_id),
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    carrier_id        text REFERENCES carriers (carrier_id),
    unit_bytes        bigint NOT NULL CHECK (unit_bytes > 0),
    unit_minor        bigint NOT NULL CHECK (unit_minor >= 0),
    currency          text NOT NULL,
    state             text NOT NULL CHECK (state IN (
        'placed', 'paid', 'fulfilled', 'failed', 'refunded')),
    payment_state     text NOT NULL CHECK (payment_state IN (
        'none', 'pending', 'captured', 'failed')),
    -- waiting: not yet asked; pending: asked, outcome not known; delivered; failed.
    fulfilment_state  text NOT NULL CHECK (fulfilment_state IN (
        'waiting', 'pending', 'delivered', 'failed')),
    reason            text,
    voucher           text,
    spend_txn_id      bigint REFERENCES ledger_transactions (txn_id),
    payment_txn_id    bigint REFERENCES ledger_transactions (txn_id),
    returned_quantity integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key),
    CHECK (returned_quantity BETWEEN 0 AND quantity)
);
CREATE INDEX exchange_orders_user_item_idx ON exchange_orders (user_id, item_id);
CREATE INDEX exchange_orders_open_idx ON exchange_orders (updated_at)
    WHERE state IN ('placed', 'paid');

-- Every state an order went through, and why.
CREATE TABLE exchange_order_events (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id   uuid NOT NULL REFERENCES exchange_orders (order_id),
    state      text NOT NULL,
    detail     text,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exchange_order_events_idx ON exchange_order_events (order_id, event_id);

-- Returns of part or all of an order: data back to its lots, the money part refunded.
CREATE TABLE exchange_returns (
    return_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id        uuid NOT NULL REFERENCES exchange_orders (order_id),
    idempotency_key text NOT NULL UNIQUE,
    quantity        integer NOT NULL CHECK (quantity > 0),
    data_txn_id     bigint NOT NULL REFERENCES ledger_transactions (txn_id),
    money_minor     bigint NOT NULL CHECK (money_minor >= 0),
    money_state     text NOT NULL CHECK (money_state IN ('none', 'pending', 'refunded')),
    -- The money part of a failed order is refunded as a return of the whole order.
    money_txn_id    bigint REFERENCES ledger_transactions (txn_id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
