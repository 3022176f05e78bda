-- depends: 0015.web_sessions
-- Every allocation row costs a write in each of the table's indexes, and the allocation run
-- writes one or more rows per usage item: an index earns its place only by a query that needs
-- it. Statements and their drill-down read by payer (allocations_payer_idx), month-wide reports
-- by period (allocations_period_idx); nothing looks allocations up by SIM and item, so that
-- index goes. (The driver page reads the daily totals, and an item's report is found from
-- usage_reports.)
DROP INDEX allocations_item_idx;
