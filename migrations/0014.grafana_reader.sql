-- depends: 0013.statements
-- The read-only database role Grafana's TimescaleDB data source connects as
-- (deploy/grafana/, docs/dashboards.md). Grafana runs whatever SQL a dashboard editor types,
-- so this role is the boundary: it reads what the operator dashboards chart, column by column
-- where a table also holds something they do not need, and nothing else.
--
-- The role is created NOLOGIN and without a password: no one can connect as it until the
-- deployment gives it both (`deploy/grafana/set_reader_password.py`, run by the compose
-- service `grafana-reader`, from FLOWBILL_GRAFANA_DB_PASSWORD), so a password never appears
-- in a migration or in the schema history. Roles belong to the cluster, not the database:
-- another database of the same cluster may have created it already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flowbill_grafana') THEN
        CREATE ROLE flowbill_grafana NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
            NOREPLICATION CONNECTION LIMIT 10;
    END IF;
END
$$;
-- Even a query typed into Grafana cannot write, and cannot hold the database for long.
ALTER ROLE flowbill_grafana SET default_transaction_read_only = on;
ALTER ROLE flowbill_grafana SET statement_timeout = '30s';
ALTER ROLE flowbill_grafana SET idle_in_transaction_session_timeout = '60s';

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO flowbill_grafana', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO flowbill_grafana;

-- Metering: hourly rollups and sequence tracking per SIM (ICCIDs are device identifiers; the
-- dashboards only ever chart sums and counts over them).
GRANT SELECT ON usage_hourly, sim_boots TO flowbill_grafana;
-- Rejects: when and why, never the raw payload, its topic (an ICCID) or the parser's detail.
GRANT SELECT (reject_id, received_at, reason, payload_size) ON ingest_rejects TO flowbill_grafana;

-- Billing: the run's batches (allocation lag) and the daily allocation totals, without the SIM.
GRANT SELECT ON billing_batches TO flowbill_grafana;
GRANT SELECT (day, app, category, payer_kind, payer_id, bytes, items)
    ON allocation_daily TO flowbill_grafana;

-- Sponsors' budgets: the policy's name and budget, not the request that created it.
GRANT SELECT (policy_id, sponsor_id, name, budget_bytes, budget_minor, currency, created_at)
    ON policies TO flowbill_grafana;
GRANT SELECT ON policy_spend TO flowbill_grafana;

-- Tenants hold drivers' names too: Grafana sees sponsors' names only, through this view
-- (it reads tenants with its owner's rights; security_barrier keeps a caller's own
-- conditions from being evaluated on rows the view filters out).
CREATE VIEW grafana_sponsors WITH (security_barrier) AS
    SELECT tenant_id AS sponsor_id, name FROM tenants WHERE role = 'sponsor';
GRANT SELECT ON grafana_sponsors TO flowbill_grafana;

-- The wallet ledger: amounts, kinds and times. Not the accounts' owners (user ids), the
-- transactions' idempotency keys or memos, or the lots' sources.
GRANT SELECT (account_id, kind, asset, balance) ON ledger_accounts TO flowbill_grafana;
GRANT SELECT (txn_id, kind, reverses_txn_id, created_at) ON ledger_transactions
    TO flowbill_grafana;
GRANT SELECT (entry_id, txn_id, account_id, asset, amount, lot_id) ON ledger_entries
    TO flowbill_grafana;
GRANT SELECT (lot_id, account_id, funded_by, granted, remaining, expires_at, created_at)
    ON wallet_lots TO flowbill_grafana;
