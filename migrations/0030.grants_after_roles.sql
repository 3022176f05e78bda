-- depends: 0025.ingest_abuse_limits 0026.device_credentials 0029.component_roles
-- Grants for the tables that came beside the component roles:
-- the ingest workers count every reject per SIM-hour (0025); Grafana charts the totals by
-- hour, never the SIM; the allocation run never reads devices' credentials (0026).
GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_reject_tally TO flowbill_ingest;
GRANT SELECT (hour, rejected) ON ingest_reject_tally TO flowbill_grafana;
REVOKE ALL ON device_credentials FROM flowbill_billing;
