-- Tenants are every caller of the API: the platform operator, sponsors, merchants, drivers.
-- API keys are stored as the SHA-256 of a 256-bit random secret: the key is shown once.

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role        text NOT NULL CHECK (role IN ('operator', 'sponsor', 'merchant', 'driver')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

CREATE TABLE api_keys (
    key_id        text PRIMARY KEY CHECK (key_id ~ '^[a-z0-9]{16}$'),
    tenant_id     uuid NOT NULL REFERENCES tenants (tenant_id),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    label         text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
