-- depends: 0007.wallet_take
-- A redemption in one round trip: placing an exchange order (wallet/exchange.py place_order)
-- used to be ten statements, each a round trip between the API and the database, which is
-- what capped redemptions per second. This function takes the same steps in the caller's
-- transaction, with the same locks and checks:
--
--   1. the item: active, and its MB price for the user's carrier;
--   2. the ledger transaction, claimed under `exchange-order:<order id>:spend` (the order id
--      is drawn here, so the order is written once, already pointing at its spend);
--   3. the order under (user, idempotency key): a repeat finds the first order (a concurrent
--      twin waits on the unique index until the first commits or rolls back);
--   4. the user's wallet, locked: it serialises this user's orders, so the per-user limit
--      count and the balance check hold until the commit;
--   5. the stock (the item's row is locked after the wallet's, as returns do: no deadlock);
--   6. the lots taken by wallet_take (0007) into data in flight, and the order's events.
--
-- `outcome` says what happened: 'placed' (a new order), 'existing' (a repeat of the same
-- request), or why nothing was taken: 'no_item', 'carrier_required', 'unknown_carrier',
-- 'invalid_amount', 'key_reused', 'no_wallet', 'limit_reached', 'insufficient',
-- 'out_of_stock'. A refusal leaves nothing behind: what it had written is deleted again.

CREATE FUNCTION wallet_place_order(
    p_user text, p_key text, p_item uuid, p_quantity integer, p_carrier text,
    p_now timestamptz,
    OUT outcome text, OUT held_units bigint, OUT item_name text, OUT item_kind text,
    OUT item_limit integer, OUT item_carriers text[], OUT placed exchange_orders,
    OUT event_states text[], OUT event_details text[], OUT event_ats timestamptz[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_item catalogue_items%ROWTYPE;
    v_order uuid := gen_random_uuid();
    v_unit bigint;
    v_amount bigint;
    v_wallet bigint;
    v_in_flight bigint;
    v_txn bigint;
    v_taken integer;
BEGIN
    SELECT * INTO v_item FROM catalogue_items WHERE item_id = p_item;
    IF NOT FOUND OR NOT v_item.active THEN
        outcome := 'no_item';
        RETURN;
    END IF;
    item_name := v_item.name;
    item_kind := v_item.kind;
    item_limit := v_item.per_user_limit;
    IF v_item.carrier_prices = '{}'::jsonb THEN
        v_unit := v_item.price_bytes;
    ELSIF p_carrier IS NULL THEN
        outcome := 'carrier_required';
        item_carriers := ARRAY(SELECT jsonb_object_keys(v_item.carrier_prices) ORDER BY 1);
        RETURN;
    ELSE
        v_unit := coalesce((v_item.carrier_prices ->> p_carrier)::bigint, v_item.price_bytes);
    END IF;
    IF p_carrier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM carriers c
                                             WHERE c.carrier_id = p_carrier) THEN
        outcome := 'unknown_carrier';
        RETURN;
    END IF;
    v_amount := v_unit * p_quantity;
    IF v_amount > 1125899906842624 THEN  -- wallet.service.MAX_AMOUNT, 2^50
        outcome := 'invalid_amount';
        RETURN;
    END IF;

    -- As wallet.service.claim writes a spend: the request digest is the SHA-256 of the same
    -- canonical JSON (keys sorted, Python's separators); tests/wallet/test_place_order.py
    -- holds the two to each other.
    INSERT INTO ledger_transactions (idempotency_key, kind, request_digest, memo)
    VALUES (
        'exchange-order:' || v_order || ':spend', 'spend',
        sha256(convert_to(format(
            '{"data_bytes": %s, "kind": "spend", "to_kind": "in_flight", '
            '"to_owner": "exchange", "user": %s}', v_amount, to_json(p_user)), 'UTF8')),
        jsonb_build_object('exchange_order', v_order::text, 'item', v_item.name,
                           'quantity', p_quantity))
    RETURNING txn_id INTO v_txn;

    INSERT INTO exchange_orders (order_id, user_id, idempotency_key, item_id, quantity,
        carrier_id, unit_bytes, unit_minor, currency, state, payment_state, fulfilment_state,
        spend_txn_id)
    VALUES (v_order, p_user, p_key, p_item, p_quantity, p_carrier, v_unit, v_item.price_minor,
        v_item.currency, CASE WHEN v_item.price_minor > 0 THEN 'placed' ELSE 'paid' END,
        CASE WHEN v_item.price_minor > 0 THEN 'pending' ELSE 'none' END, 'waiting', v_txn)
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING * INTO placed;
    IF placed.order_id IS NULL THEN
        DELETE FROM ledger_transactions WHERE txn_id = v_txn;
        SELECT * INTO placed FROM exchange_orders o
        WHERE o.user_id = p_user AND o.idempotency_key = p_key;
        IF (placed.item_id, placed.quantity, placed.carrier_id)
           IS DISTINCT FROM (p_item, p_quantity, p_carrier) THEN
            outcome := 'key_reused';
            placed := NULL;
            RETURN;
        END IF;
        outcome := 'existing';
        SELECT array_agg(e.state ORDER BY e.event_id), array_agg(e.detail ORDER BY e.event_id),
               array_agg(e.at ORDER BY e.event_id)
        INTO event_states, event_details, event_ats
        FROM exchange_order_events e WHERE e.order_id = placed.order_id;
        RETURN;
    END IF;

    SELECT a.account_id INTO v_wallet FROM ledger_accounts a
    WHERE a.kind = 'user_wallet' AND a.owner = p_user AND a.asset = 'data'
    FOR UPDATE;
    IF v_wallet IS NULL THEN
        outcome := 'no_wallet';
    END IF;
    IF outcome IS NULL AND v_item.per_user_limit IS NOT NULL THEN
        -- Units held or on order, this order aside.
        SELECT coalesce(sum(o.quantity - o.returned_quantity), 0) INTO held_units
        FROM exchange_orders o
        WHERE o.user_id = p_user AND o.item_id = p_item AND o.order_id <> v_order
          AND o.state NOT IN ('failed', 'refunded') AND o.spend_txn_id IS NOT NULL;
        IF held_units + p_quantity > v_item.per_user_limit THEN
            outcome := 'limit_reached';
        END IF;
    END IF;
    IF outcome IS NULL AND (SELECT coalesce(sum(l.remaining), 0) FROM wallet_lots l
                            WHERE l.account_id = v_wallet AND l.remaining > 0
                              AND l.expires_at > p_now) < v_amount THEN
        outcome := 'insufficient';
    END IF;
    IF outcome IS NULL AND v_item.stock IS NOT NULL THEN
        UPDATE catalogue_items SET stock = stock - p_quantity
        WHERE item_id = p_item AND stock >= p_quantity;
        IF NOT FOUND THEN
            outcome := 'out_of_stock';
        END IF;
    END IF;
    IF outcome IS NOT NULL THEN
        DELETE FROM exchange_orders WHERE order_id = v_order;
        DELETE FROM ledger_transactions WHERE txn_id = v_txn;
        placed := NULL;
        RETURN;
    END IF;

    SELECT a.account_id INTO v_in_flight FROM ledger_accounts a
    WHERE a.kind = 'in_flight' AND a.owner = 'exchange' AND a.asset = 'data';
    IF v_in_flight IS NULL THEN
        INSERT INTO ledger_accounts (kind, owner, asset) VALUES ('in_flight', 'exchange', 'data')
        ON CONFLICT (kind, owner, asset) DO NOTHING RETURNING account_id INTO v_in_flight;
        IF v_in_flight IS NULL THEN
            -- Created by another transaction meanwhile: this new statement sees its commit.
            SELECT a.account_id INTO v_in_flight FROM ledger_accounts a
            WHERE a.kind = 'in_flight' AND a.owner = 'exchange' AND a.asset = 'data';
        END IF;
    END IF;
    SELECT count(*) INTO v_taken
    FROM wallet_take(v_txn, v_wallet, v_amount, v_in_flight, p_now);
    IF v_taken = 0 THEN
        -- The balance was checked under the wallet's lock just above.
        RAISE EXCEPTION 'wallet_place_order: wallet % could not pay % bytes', v_wallet, v_amount;
    END IF;

    IF placed.state = 'paid' THEN
        event_states := ARRAY['placed', 'paid'];
        event_details := ARRAY[NULL, 'no money part'];
    ELSE
        event_states := ARRAY['placed'];
        event_details := ARRAY[NULL];
    END IF;
    -- `at` defaults to now(), the transaction's start, as below.
    INSERT INTO exchange_order_events (order_id, state, detail)
    SELECT v_order, e.state, e.detail FROM unnest(event_states, event_details) AS e(state, detail);
    event_ats := array_fill(now(), ARRAY[cardinality(event_states)]);
    outcome := 'placed';
END
$$;
