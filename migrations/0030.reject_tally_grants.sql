-- depends: 0025.ingest_abuse_limits 0029.component_roles
-- The ingest workers count every reject per SIM-hour (0025); Grafana charts the totals by
-- hour, never the SIM.
GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_reject_tally TO flowbill_ingest;
GRANT SELECT (hour, rejected) ON ingest_reject_tally TO flowbill_grafana;
