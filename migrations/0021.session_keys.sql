-- depends: 0018.domain_views
-- A browser session of the driver page belongs to the API key that opened it: the key pasted
-- into the sign-in form, or the key that asked for the one-time link it was opened with. The
-- page's session check joins the key, so revoking it (or disabling the tenant) ends the session
-- at the next request, in every API process. Sessions and unused links of before this step name
-- no key: they end here, and their drivers sign in again.
DELETE FROM web_sessions;
DELETE FROM web_sign_in_links;
ALTER TABLE web_sessions ADD COLUMN key_id text NOT NULL REFERENCES api_keys (key_id);
ALTER TABLE web_sign_in_links ADD COLUMN key_id text NOT NULL REFERENCES api_keys (key_id);
CREATE INDEX web_sessions_key ON web_sessions (key_id);
CREATE INDEX web_sign_in_links_key ON web_sign_in_links (key_id);
CREATE INDEX web_sign_in_links_tenant ON web_sign_in_links (tenant_id);
