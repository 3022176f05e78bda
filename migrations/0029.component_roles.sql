-- depends: 0028.owner_changes_applied
-- Least privilege at run time: each component connects as its own role with the grants it
-- needs, never as the owner that runs these migrations (docs/operations.md, "Database roles").
--
--   flowbill_api       the HTTP API (and the periodic commands that do what its routes do)
--   flowbill_ingest    the ingest workers: usage in, rejects and sequence gaps
--   flowbill_billing   the allocation run and the coverage it publishes
--   flowbill_webhooks  the webhook sender: its outbox and delivery log only
--
-- Like flowbill_grafana (0014) the roles are created NOLOGIN without a password; the
-- deployment lets them log in (`flowbill db-logins`, the local stack at start-up). Roles
-- belong to the cluster: another database of it may have made them already. None may create
-- objects, own anything, or run server programs (`COPY … TO PROGRAM` needs a superuser or
-- pg_execute_server_program, which none is given).
DO $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['flowbill_api', 'flowbill_ingest', 'flowbill_billing',
                                'flowbill_webhooks'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                           'NOINHERIT NOREPLICATION', role);
        END IF;
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), role);
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', role);
        EXECUTE format('REVOKE CREATE ON SCHEMA public FROM %I', role);
    END LOOP;
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The API and the allocation run reach most of the data model: they get every table, view
-- and sequence, also those later migrations make (default privileges of the owner), minus
-- what they never need below.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public
    TO flowbill_api, flowbill_billing;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO flowbill_api, flowbill_billing;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO flowbill_api, flowbill_billing;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO flowbill_api, flowbill_billing;

-- The schema history is the owner's.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = 'public' AND tablename LIKE '\_yoyo%' LOOP
        EXECUTE format('REVOKE ALL ON %I FROM flowbill_api, flowbill_billing', t);
    END LOOP;
END
$$;

-- The allocation run never reads keys, browser sessions or card holders' identities.
REVOKE ALL ON api_keys, web_sessions, web_sign_in_links, iot_id_holders, iot_verifications
    FROM flowbill_billing;

-- The wallet's ledger entries are append-only for everyone: never changed or removed (an
-- order refused inside `wallet_place_order` removes its own transaction before any entry is
-- written), and no account is ever removed.
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_entries FROM flowbill_api, flowbill_billing;
REVOKE DELETE, TRUNCATE ON ledger_accounts FROM flowbill_api, flowbill_billing;
REVOKE TRUNCATE ON ledger_transactions FROM flowbill_api, flowbill_billing;

-- Ingest: the SIMs it checks reports against, the usage it stores, rejects and sequence gaps.
GRANT SELECT ON sims TO flowbill_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON usage_reports, usage_items, usage_hourly, sim_boots,
    ingest_rejects TO flowbill_ingest;
GRANT SELECT ON ingest_stored_items, ingest_stored_reports TO flowbill_ingest;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO flowbill_ingest;

-- Webhooks: the endpoints it sends to, its outbox and the attempts it logs.
GRANT SELECT, UPDATE ON webhook_endpoints TO flowbill_webhooks;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_messages, webhook_attempts TO flowbill_webhooks;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO flowbill_webhooks;
