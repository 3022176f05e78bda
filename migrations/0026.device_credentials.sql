-- depends: 0022.price_floors
-- Device identity: the credentials each SIM's device uses to reach the broker. This is the
-- desired state; the device reconciler writes the broker's password file and the CRL from
-- it. A password is kept only as the broker's own hash (`$7$`, PBKDF2-SHA512); a
-- certificate by its serial and fingerprint (the CA keeps no copy either).

CREATE TABLE device_credentials (
    credential_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    iccid              text NOT NULL REFERENCES sims (iccid),
    kind               text NOT NULL CHECK (kind IN ('password', 'certificate')),
    password_hash      text CHECK (password_hash LIKE '$7$%'),
    serial             text UNIQUE CHECK (serial ~ '^[0-9a-f]{1,40}$'),
    fingerprint_sha256 text CHECK (fingerprint_sha256 ~ '^[0-9a-f]{64}$'),
    not_after          timestamptz,
    issued_at          timestamptz NOT NULL,
    -- Rotated out: still accepted until then (the overlap), refused after.
    retires_at         timestamptz,
    -- Revoked: refused from then on, for good.
    revoked_at         timestamptz,
    -- When any of the above last changed: the reconciler's cue to rewrite the broker's files.
    changed_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((kind = 'password') = (password_hash IS NOT NULL)),
    CHECK ((kind = 'certificate') =
           (serial IS NOT NULL AND fingerprint_sha256 IS NOT NULL AND not_after IS NOT NULL))
);

-- At most one current (neither rotated out nor revoked) credential per SIM.
CREATE UNIQUE INDEX device_credentials_current
    ON device_credentials (iccid) WHERE retires_at IS NULL AND revoked_at IS NULL;
CREATE INDEX device_credentials_by_iccid ON device_credentials (iccid, credential_id);
CREATE INDEX device_credentials_changed ON device_credentials (changed_at);
