-- depends: 0006.exchange
-- The heart of a redemption in one round trip: lock the wallet, take its unexpired lots
-- earliest expiry first (then oldest), write one entry per lot and the destination's entry,
-- and move the wallet's cached balance. Returns the lots taken, or no row when the wallet
-- holds less unexpired data than asked (then nothing was written).

CREATE FUNCTION wallet_take(
    p_txn_id bigint, p_wallet bigint, p_amount bigint, p_destination bigint, p_now timestamptz
) RETURNS TABLE (taken_lot_id bigint, taken bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := p_amount;
    v_lot record;
BEGIN
    IF p_amount <= 0 THEN
        RAISE EXCEPTION 'wallet_take: amount must be positive';
    END IF;
    -- The wallet's row lock serialises its debits: concurrent spends never overdraw it.
    PERFORM 1 FROM ledger_accounts WHERE account_id = p_wallet AND kind = 'user_wallet' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF (SELECT coalesce(sum(remaining), 0) FROM wallet_lots
        WHERE account_id = p_wallet AND remaining > 0 AND expires_at > p_now) < p_amount THEN
        RETURN;
    END IF;
    FOR v_lot IN
        SELECT l.lot_id, l.remaining FROM wallet_lots l
        WHERE l.account_id = p_wallet AND l.remaining > 0 AND l.expires_at > p_now
        ORDER BY l.expires_at, l.lot_id
        FOR UPDATE
    LOOP
        taken_lot_id := v_lot.lot_id;
        taken := least(v_left, v_lot.remaining);
        UPDATE wallet_lots SET remaining = remaining - taken WHERE lot_id = v_lot.lot_id;
        INSERT INTO ledger_entries (txn_id, account_id, asset, amount, lot_id)
        VALUES (p_txn_id, p_wallet, 'data', -taken, v_lot.lot_id);
        RETURN NEXT;
        v_left := v_left - taken;
        EXIT WHEN v_left = 0;
    END LOOP;
    INSERT INTO ledger_entries (txn_id, account_id, asset, amount)
    VALUES (p_txn_id, p_destination, 'data', p_amount);
    UPDATE ledger_accounts SET balance = balance - p_amount WHERE account_id = p_wallet;
    -- Only accounts that keep a cached balance (wallet/repository.py CACHED_KINDS).
    UPDATE ledger_accounts SET balance = balance + p_amount
    WHERE account_id = p_destination AND kind IN ('user_wallet', 'merchant_pool', 'campaign');
END
$$;
