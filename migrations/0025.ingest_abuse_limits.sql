-- depends: 0002.metering
-- Rejects under abuse: every rejected message is counted here, per SIM (the topic's ICCID
-- segment, as sent) and UTC hour of receipt, and only the first few of each SIM-hour keep
-- their raw bytes in ingest_rejects (FLOWBILL_INGEST_REJECT_PAYLOADS_PER_SIM_HOUR), so a
-- device that sends garbage in a loop costs one row per hour, not one row per message.
-- The row is also the lock that makes "the first N" exact across workers.
CREATE TABLE ingest_reject_tally (
    sim      text        NOT NULL CHECK (length(sim) <= 64),
    hour     timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour, 'UTC')),
    rejected bigint      NOT NULL CHECK (rejected > 0),
    PRIMARY KEY (sim, hour)
);
-- Retention deletes by hour.
CREATE INDEX ingest_reject_tally_hour_idx ON ingest_reject_tally (hour);
