-- depends: 0017.allocation_index_costs
-- Read contracts: views that a domain owns so that another domain's hot read path can use SQL
-- without naming its tables. The owner keeps each view's columns and their meaning, whatever it
-- does to its tables (a migration that changes a table the view reads replaces the view in the
-- same step); the reader's SQL names only the view. They are plain views: the planner inlines
-- them, so a query over a view gets the plan of the same query over the table.

-- Ingest's (docs/protocol.md, "Read contract"): every stored usage item with the transaction
-- that stored it. Everything below the oldest running transaction is final, so the allocation
-- run reads the items transaction range by transaction range and never misses a late commit.
CREATE VIEW ingest_stored_items AS
    SELECT ingest_xid, window_start, iccid, boot, seq, app,
           up_bytes + down_bytes AS bytes, received_at
      FROM usage_items;

-- Ingest's: each stored device report's window and arrival, by its key (iccid, boot, seq,
-- window start). Statements' drill-down shows the report behind each item; retention may have
-- removed it (reports are raw data, kept for a while), so readers join it as optional.
CREATE VIEW ingest_stored_reports AS
    SELECT iccid, boot, seq, window_start, window_end, received_at
      FROM usage_reports;
