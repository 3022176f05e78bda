-- depends: 0016.allocation_indexes
-- The allocation run writes one or more rows per usage item, and each row costs a write in
-- every index of `allocations`. Measured over 600,000 rows of the allocation benchmark, the
-- two indexes cost about four times the rows themselves; this brings that to about three.
--
-- allocations_period_idx: every row of a month carries that month, and rows arrive in time of
-- use (later months' adjustments arrive later still), so a BRIN index finds a month's rows as
-- well as a B-tree did, for almost nothing per row.
DROP INDEX allocations_period_idx;
CREATE INDEX allocations_period_idx ON allocations USING brin (period);

-- allocations_payer_idx: its keys are unique (one row per item and payer), so B-tree
-- deduplication never has anything to merge, and looking for it costs at every page split.
-- Set on the hypertable's index (for chunks to come) and on each chunk's copy of it.
ALTER INDEX allocations_payer_idx SET (deduplicate_items = off);
DO $$
DECLARE
    chunk_index regclass;
BEGIN
    FOR chunk_index IN
        SELECT i.indexrelid::regclass
          FROM pg_inherits h
          JOIN pg_index i ON i.indrelid = h.inhrelid
          JOIN pg_class c ON c.oid = i.indexrelid
         WHERE h.inhparent = 'allocations'::regclass
           AND c.relname LIKE '%allocations_payer_idx'
    LOOP
        EXECUTE format('ALTER INDEX %s SET (deduplicate_items = off)', chunk_index);
    END LOOP;
END $$;
