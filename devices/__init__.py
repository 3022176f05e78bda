"""Device identity: the credentials a SIM's device uses to reach the broker, and the broker's
copy of them (docs/security.md, "Device identity")."""
