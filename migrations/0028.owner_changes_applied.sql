-- depends: 0019.sim_owners_driver_consent 0022.price_floors
-- Owner changes that take effect later, and the SIMs of IoT cards given to merchants.
--
-- A change of owner from now takes the SIM out of another automaker's vehicle at once; one
-- dated later does so when it takes effect: the billing run applies due changes before each
-- batch. `applied_at` says when that was done (NULL: not yet).
ALTER TABLE sim_owners ADD COLUMN applied_at timestamptz;
UPDATE sim_owners SET applied_at = effective_from WHERE effective_from <= now();
CREATE INDEX sim_owners_due_idx ON sim_owners (effective_from) WHERE applied_at IS NULL;
-- … and for SIMs whose owner change was applied since its last look (their coverage changed).
CREATE INDEX sim_owners_applied_idx ON sim_owners (applied_at);

-- The billing run looks every few seconds for vehicles whose SIMs or accepted driver changed …
CREATE INDEX vehicles_updated_idx ON vehicles (updated_at);

-- IoT cards given to a merchant before card assignments set owners belong to that merchant
-- from when they were imported.
INSERT INTO sim_owners (iccid, effective_from, owner_id, applied_at)
SELECT c.iccid, c.created_at, c.merchant_id, c.created_at
  FROM iot_cards c JOIN sims s USING (iccid)
 WHERE c.merchant_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM sim_owners o WHERE o.iccid = c.iccid);
