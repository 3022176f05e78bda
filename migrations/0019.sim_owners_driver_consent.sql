-- depends: 0018.domain_views
-- Who owns a SIM, and which driver agreed to pay for a vehicle.
--
-- A SIM's owner (an automaker sponsor or an IoT merchant) is set by the operator only, from a
-- moment on; the history stays. The owner at a moment is the row with the latest
-- `effective_from` not after it; an owner of NULL means the SIM was released (unowned).
CREATE TABLE sim_owners (
    iccid          text        NOT NULL REFERENCES sims (iccid),
    effective_from timestamptz NOT NULL,
    owner_id       uuid        REFERENCES tenants (tenant_id),
    set_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (iccid, effective_from)
);
CREATE INDEX sim_owners_owner_idx ON sim_owners (owner_id, iccid);

-- SIMs fitted before owners existed belong to the automaker of their vehicle, from when they
-- were fitted (the operator reviews and reassigns them with the ownership command).
INSERT INTO sim_owners (iccid, effective_from, owner_id)
SELECT s.iccid, s.fitted_at, v.automaker_id
  FROM vehicle_sims s JOIN vehicles v USING (vin) JOIN sims USING (iccid);

-- A driver named on a vehicle is invited; the link pays from the wallet only once accepted,
-- and until it ends (the driver ends it, or the automaker names no or another driver).
-- `vehicles.driver_id` holds the driver of the accepted, current link (NULL: none), kept in
-- the same transaction as these rows: it is what the allocation run reads.
CREATE TABLE vehicle_drivers (
    link_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vin         text        NOT NULL REFERENCES vehicles (vin),
    driver_id   uuid        NOT NULL REFERENCES tenants (tenant_id),
    invited_at  timestamptz NOT NULL DEFAULT now(),
    accepted_at timestamptz,
    declined_at timestamptz,
    ended_at    timestamptz,
    ended_by    text CHECK (ended_by IN ('driver', 'automaker')),
    CHECK (accepted_at IS NULL OR declined_at IS NULL),
    CHECK ((ended_at IS NULL) = (ended_by IS NULL))
);
-- At most one open link (invited or accepted) per vehicle.
CREATE UNIQUE INDEX vehicle_drivers_open_idx ON vehicle_drivers (vin)
    WHERE declined_at IS NULL AND ended_at IS NULL;
CREATE INDEX vehicle_drivers_driver_idx ON vehicle_drivers (driver_id, vin)
    WHERE declined_at IS NULL AND ended_at IS NULL;

-- Drivers named before consent existed never agreed: they are invited now, and their wallets
-- pay nothing for those vehicles until they accept.
INSERT INTO vehicle_drivers (vin, driver_id, invited_at)
SELECT vin, driver_id, now() FROM vehicles WHERE driver_id IS NOT NULL;
UPDATE vehicles SET driver_id = NULL WHERE driver_id IS NOT NULL;
