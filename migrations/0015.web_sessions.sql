-- depends: 0013.statements
-- The driver page's sign-in: a browser session is a random token in an HttpOnly cookie, of
-- which only the SHA-256 is stored here (a stolen table signs no one in). Each session carries
-- its own CSRF token, which every form of the page posts back.
CREATE TABLE web_sessions (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    csrf_token text NOT NULL CHECK (length(csrf_token) >= 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX web_sessions_tenant ON web_sessions (tenant_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- One-time sign-in links (`POST /v1/me/sign-in-links`): a random token, stored hashed, that
-- opens one session within its validity and never again.
CREATE TABLE web_sign_in_links (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX web_sign_in_links_expiry ON web_sign_in_links (expires_at);
