-- depends: 0022.price_floors
-- The sender claims due attempts endpoint by endpoint (a few each, so that one endpoint's
-- backlog never crowds out the others): an index probe per endpoint, not a scan of the queue.
CREATE INDEX webhook_attempts_endpoint_due_idx ON webhook_attempts (endpoint_id, due_at)
    WHERE status = 'pending';
-- Test events an endpoint was sent in the last minute (they are rate-limited).
CREATE INDEX webhook_attempts_tests_idx ON webhook_attempts (endpoint_id, created_at)
    WHERE trigger = 'test';
-- The purge of old messages walks them by age, across tenants.
CREATE INDEX webhook_messages_created_idx ON webhook_messages (created_at);
