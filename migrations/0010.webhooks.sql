-- depends: 0009.billing
-- Webhooks signed per the Standard Webhooks spec (docs/webhooks.md): each tenant's endpoints,
-- the messages its events produced, and every delivery attempt of a message to an endpoint.

-- The signing secret must be readable to sign with, so it cannot be hashed like an API key;
-- it is shown to the tenant once, and wiped when the endpoint is deleted. After a rotation
-- the previous secret keeps signing (a second signature) until previous_secret_until.
CREATE TABLE webhook_endpoints (
    endpoint_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid NOT NULL REFERENCES tenants (tenant_id),
    url                   text NOT NULL CHECK (length(url) <= 2000),
    description           text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- Empty: every event type.
    event_types           text[] NOT NULL DEFAULT '{}',
    enabled               boolean NOT NULL DEFAULT true,
    secret                text CHECK (secret LIKE 'whsec\_%'),
    previous_secret       text CHECK (previous_secret LIKE 'whsec\_%'),
    previous_secret_until timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz,
    CHECK ((deleted_at IS NULL) = (secret IS NOT NULL)),
    CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL))
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id)
    WHERE deleted_at IS NULL;

-- One message per event of a tenant; event_key makes enqueueing exactly-once. `body` is the
-- exact JSON text sent and signed (jsonb would reorder it), the same at every attempt.
CREATE TABLE webhook_messages (
    message_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_id      text NOT NULL UNIQUE CHECK (msg_id ~ '^msg_[A-Za-z0-9]{16,64}$'),
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    event_type  text NOT NULL CHECK (event_type ~ '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$'
                                     AND length(event_type) <= 100),
    event_key   text NOT NULL CHECK (length(event_key) BETWEEN 1 AND 300),
    body        text NOT NULL CHECK (octet_length(body) <= 65536),
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, event_key)
);
CREATE INDEX webhook_messages_tenant_idx ON webhook_messages (tenant_id, created_at DESC);

-- The queue and the delivery log in one table: a pending row is an attempt waiting to be sent
-- at due_at (while a worker sends it, due_at is the end of its lease, so that a worker that
-- died mid-send leaves it to be sent again); a finished row records what happened. A failed
-- attempt that is retried is followed by a pending row with attempt_no + 1; a replay starts a
-- new chain at attempt_no 1. The latest row of a (message, endpoint) pair is its status.
CREATE TABLE webhook_attempts (
    attempt_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       bigint NOT NULL REFERENCES webhook_messages (message_id),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    attempt_no       integer NOT NULL CHECK (attempt_no >= 1),
    trigger          text NOT NULL CHECK (trigger IN ('event', 'replay', 'test')),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    due_at           timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    duration_ms      integer CHECK (duration_ms >= 0),
    status_code      integer CHECK (status_code BETWEEN 100 AND 599),
    response_excerpt text CHECK (length(response_excerpt) <= 500),
    error            text CHECK (length(error) <= 500),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_due_idx ON webhook_attempts (due_at) WHERE status = 'pending';
CREATE INDEX webhook_attempts_message_idx ON webhook_attempts (message_id, endpoint_id, attempt_id);
CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, attempt_id);
