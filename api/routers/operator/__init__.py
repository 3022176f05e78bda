"""The operator's endpoints: tenants and keys, metering, sponsors, wallet, billing, IoT cards."""
