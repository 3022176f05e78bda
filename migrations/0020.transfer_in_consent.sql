-- depends: 0018.domain_views
-- A transfer-in takes data from a phone line, so it waits for the subscriber's consent: the
-- carrier sends a one-time code to the line and the user confirms with it (wallet.withdrawals).
-- The order starts `awaiting_consent`; the code is the carrier's, never stored here: we keep
-- only how many tries were made and until when a code may be confirmed. What was credited is
-- kept apart from what was asked, as it is capped by both.
ALTER TABLE carrier_orders DROP CONSTRAINT carrier_orders_state_check;
ALTER TABLE carrier_orders ADD CONSTRAINT carrier_orders_state_check
    CHECK (state IN ('awaiting_consent', 'reserved', 'submitted', 'confirmed', 'failed'));
ALTER TABLE carrier_orders
    ADD COLUMN consent_tries integer NOT NULL DEFAULT 0 CHECK (consent_tries >= 0),
    ADD COLUMN consent_expires_at timestamptz,
    ADD COLUMN consented_at timestamptz,
    ADD COLUMN credited_mb integer CHECK (credited_mb > 0);
CREATE INDEX carrier_orders_awaiting_consent_idx ON carrier_orders (consent_expires_at)
    WHERE state = 'awaiting_consent';
