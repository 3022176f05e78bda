"""Let Flowbill's database roles log in, each with its own password.

Usage (the compose service `db-logins` runs it after `migrate`, in the Flowbill image, with
the owner's URL):
    FLOWBILL_DATABASE_URL=postgresql://flowbill:...@timescaledb:5432/flowbill \
    FLOWBILL_API_DB_PASSWORD=... FLOWBILL_INGEST_DB_PASSWORD=... \
    FLOWBILL_BILLING_DB_PASSWORD=... FLOWBILL_WEBHOOKS_DB_PASSWORD=... \
    FLOWBILL_GRAFANA_DB_PASSWORD=... python set_role_passwords.py

The migrations create the roles NOLOGIN and without a password (0014 Grafana's read-only
role, 0029 the components' roles, with the grants each needs). This gives each role whose
variable is set LOGIN and that password, again on every run (so changing a variable and
re-running rotates it); a role whose variable is unset is left as it is. Each password is
hashed here (SCRAM-SHA-256, by libpq) and only the verifier is sent, so the clear text never
reaches the server, its logs or pg_stat_statements. Needs a database user that may alter
roles (the compose file's `flowbill` user is the database's owner and superuser).
"""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg import sql

# The variable that holds each role's password.
ROLES = {
    "FLOWBILL_API_DB_PASSWORD": "flowbill_api",
    "FLOWBILL_INGEST_DB_PASSWORD": "flowbill_ingest",
    "FLOWBILL_BILLING_DB_PASSWORD": "flowbill_billing",
    "FLOWBILL_WEBHOOKS_DB_PASSWORD": "flowbill_webhooks",
    "FLOWBILL_GRAFANA_DB_PASSWORD": "flowbill_grafana",
}
MIN_PASSWORD = 16


def main() -> int:
    database_url = os.environ.get("FLOWBILL_DATABASE_URL", "")
    wanted = {role: os.environ[var] for var, role in ROLES.items() if os.environ.get(var)}
    if not database_url or not wanted:
        print("set FLOWBILL_DATABASE_URL and at least one of " + ", ".join(ROLES), file=sys.stderr)
        return 2
    short = [
        var
        for var, role in ROLES.items()
        if len(wanted.get(role, "x" * MIN_PASSWORD)) < MIN_PASSWORD
    ]
    if short:
        print(
            f"passwords of at least {MIN_PASSWORD} characters: " + ", ".join(short), file=sys.stderr
        )
        return 2
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role, password in wanted.items():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists is None:
                print(f"role {role} does not exist: run `flowbill migrate` first", file=sys.stderr)
                return 1
            verifier = conn.pgconn.encrypt_password(
                password.encode(), role.encode(), b"scram-sha-256"
            ).decode()
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier)
                )
            )
            print(f"role {role} may log in with its password")
    return 0


if __name__ == "__main__":
    sys.exit(main())
