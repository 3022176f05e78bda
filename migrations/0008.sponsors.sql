-- depends: 0007.wallet_take
-- Sponsors: the app catalogue, vehicles and their SIMs, who may sponsor an automaker's
-- vehicles, and sponsorship policies whose terms are versioned in time.

-- Apps the platform knows. An app id that is not here is "unclassified": stored and billed,
-- always to the user, never to a sponsor.
CREATE TABLE catalogue_apps (
    app        text PRIMARY KEY CHECK (app ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    category   text NOT NULL CHECK (category IN (
                   'telematics', 'backend', 'navigation', 'map_update', 'traffic_info', 'music',
                   'fm', 'video', 'wifi_hotspot', 'ota', 'other')),
    name       text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A vehicle belongs to an automaker (a sponsor tenant) and may have a driver (a driver
-- tenant, whose wallet pays the user's share of its SIMs' traffic).
CREATE TABLE vehicles (
    vin          text PRIMARY KEY CHECK (vin ~ '^[A-HJ-NPR-Z0-9]{17}$'),
    automaker_id uuid NOT NULL REFERENCES tenants (tenant_id),
    model        text NOT NULL CHECK (length(model) BETWEEN 1 AND 100),
    fleet        text CHECK (length(fleet) BETWEEN 1 AND 100),
    driver_id    uuid REFERENCES tenants (tenant_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicles_automaker_idx ON vehicles (automaker_id, model, fleet);
CREATE INDEX vehicles_driver_idx ON vehicles (driver_id) WHERE driver_id IS NOT NULL;

-- The SIMs fitted to a vehicle (a head unit and a telematics box may each have one).
CREATE TABLE vehicle_sims (
    iccid      text PRIMARY KEY CHECK (iccid ~ '^[0-9]{19,20}$'),
    vin        text NOT NULL REFERENCES vehicles (vin),
    fitted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicle_sims_vin_idx ON vehicle_sims (vin);

-- An automaker lets another sponsor (a map vendor, a music provider) pay for traffic of its
-- vehicles. Without this, a sponsor's policy cannot name that automaker's vehicles.
CREATE TABLE sponsor_partnerships (
    automaker_id uuid NOT NULL REFERENCES tenants (tenant_id),
    sponsor_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (automaker_id, sponsor_id),
    CHECK (automaker_id <> sponsor_id)
);

CREATE TABLE policies (
    policy_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sponsor_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- What the policy may spend over its life: bytes, or money at its unit prices (or none).
    budget_bytes  bigint CHECK (budget_bytes > 0),
    budget_minor  bigint CHECK (budget_minor > 0),
    currency      text NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    -- The sponsor's Idempotency-Key of the request that created it, and that request's digest.
    create_key    text NOT NULL,
    create_digest bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sponsor_id, create_key),
    CHECK (budget_bytes IS NULL OR budget_minor IS NULL)
);
CREATE INDEX policies_sponsor_idx ON policies (sponsor_id);

-- A policy's terms from a point in time. Usage is allocated under the terms in force at the
-- start of its window; a change adds terms and never rewrites what was allocated before.
CREATE TABLE policy_terms (
    policy_id      bigint NOT NULL REFERENCES policies (policy_id),
    effective_from timestamptz NOT NULL,
    scope_kind     text NOT NULL CHECK (scope_kind IN ('automaker', 'model', 'fleet', 'sims')),
    automaker_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    model          text,
    fleet          text,
    iccids         text[] NOT NULL DEFAULT '{}',
    apps           text[] NOT NULL DEFAULT '{}',
    categories     text[] NOT NULL DEFAULT '{}',
    priority       integer NOT NULL CHECK (priority BETWEEN 0 AND 1000000),
    cap_bytes      bigint CHECK (cap_bytes > 0),
    -- Price per MB (1,048,576 bytes) in the policy's currency, e.g. 0.0500 CNY.
    unit_price     numeric(14, 6) NOT NULL CHECK (unit_price >= 0),
    valid_from     timestamptz NOT NULL,
    valid_until    timestamptz,
    paused         boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, effective_from),
    CHECK (valid_until IS NULL OR valid_until > valid_from),
    CHECK (cardinality(apps) + cardinality(categories) > 0),
    CHECK ((scope_kind = 'model') = (model IS NOT NULL)),
    CHECK ((scope_kind = 'fleet') = (fleet IS NOT NULL)),
    CHECK ((scope_kind = 'sims') = (cardinality(iccids) > 0))
);
-- The allocation run reloads its policy view when terms change after it last loaded them.
CREATE INDEX policy_terms_created_idx ON policy_terms (created_at);

-- What a policy has taken so far: its budget is drawn down per allocation batch.
CREATE TABLE policy_spend (
    policy_id   bigint PRIMARY KEY REFERENCES policies (policy_id),
    used_bytes  bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    -- Exact money at the unit prices the bytes were taken at (a decimal, never rounded here:
    -- statements round once per line).
    used_money  numeric NOT NULL DEFAULT 0 CHECK (used_money >= 0)
);

-- What a policy has taken per SIM per billing period: its cap.
CREATE TABLE policy_sim_spend (
    policy_id  bigint NOT NULL REFERENCES policies (policy_id),
    iccid      text NOT NULL,
    period     date NOT NULL,
    used_bytes bigint NOT NULL CHECK (used_bytes >= 0),
    PRIMARY KEY (policy_id, period, iccid)
);

-- Alert thresholds per sponsor, in percent.
CREATE TABLE sponsor_alert_thresholds (
    sponsor_id      uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    cap_percents    integer[] NOT NULL,
    budget_percents integer[] NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Each threshold is crossed (and announced) once: per SIM and period for caps, per policy
-- for budgets (iccid '' and period 'epoch').
CREATE TABLE policy_alerts (
    policy_id  bigint NOT NULL REFERENCES policies (policy_id),
    kind       text NOT NULL CHECK (kind IN ('cap', 'budget')),
    iccid      text NOT NULL,
    period     date NOT NULL,
    percent    integer NOT NULL,
    crossed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, kind, iccid, period, percent)
);
