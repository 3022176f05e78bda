-- depends: 0018.domain_views
-- Sponsors: the operator's rate card, the least price per MB a sponsor's policy may pay for
-- traffic of an app category, per currency. Versioned in time like tariffs: a floor applies
-- to policies created and terms changed from its `effective_from` on, and never reprices
-- terms already set. A floor for one sponsor overrides the category's floor for that
-- sponsor (a contract price); a sponsor's row without a price ends its override.

CREATE TABLE price_floors (
    floor_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    category       text NOT NULL CHECK (category IN (
                       'telematics', 'backend', 'navigation', 'map_update', 'traffic_info',
                       'music', 'fm', 'video', 'wifi_hotspot', 'ota', 'other')),
    -- NULL: every sponsor (the category's floor).
    sponsor_id     uuid REFERENCES tenants (tenant_id),
    -- Price per MB (1,048,576 bytes) in `currency`, like a policy's unit price. NULL only on
    -- a sponsor's row: from then on the category's floor applies to that sponsor again.
    min_unit_price numeric(14, 6) CHECK (min_unit_price >= 0),
    effective_from timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (currency, category, sponsor_id, effective_from),
    CHECK (min_unit_price IS NOT NULL OR sponsor_id IS NOT NULL)
);

-- A fresh install refuses free sponsorship: 0.001 CNY per MB for every category until the
-- operator sets its own rate card (a currency without floors takes no policies at all).
INSERT INTO price_floors (currency, category, min_unit_price, effective_from)
SELECT 'CNY', category, 0.001, '2000-01-01T00:00:00Z'
  FROM unnest(ARRAY['telematics', 'backend', 'navigation', 'map_update', 'traffic_info',
                    'music', 'fm', 'video', 'wifi_hotspot', 'ota', 'other']) AS category;
