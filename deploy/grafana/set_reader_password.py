"""Let Grafana's read-only role log in: `flowbill_grafana` gets LOGIN and a password.

Usage (the compose service `grafana-reader` runs it after `migrate`, in the Flowbill image):
    FLOWBILL_DATABASE_URL=postgresql://flowbill:...@timescaledb:5432/flowbill \
    FLOWBILL_GRAFANA_DB_PASSWORD=... python set_reader_password.py

Migration 0014 creates the role NOLOGIN and without a password. This sets both, again on
every run (so changing the variable and re-running rotates the password). The password is
hashed here (SCRAM-SHA-256, by libpq) and only the verifier is sent, so the clear text never
reaches the server, its logs or pg_stat_statements. Needs a database user that may alter
roles (the compose file's `flowbill` user is the database's owner and superuser).
"""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg import sql

ROLE = "flowbill_grafana"


def main() -> int:
    database_url = os.environ.get("FLOWBILL_DATABASE_URL", "")
    password = os.environ.get("FLOWBILL_GRAFANA_DB_PASSWORD", "")
    if not database_url or not password:
        print("set FLOWBILL_DATABASE_URL and FLOWBILL_GRAFANA_DB_PASSWORD", file=sys.stderr)
        return 2
    with psycopg.connect(database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        if exists is None:
            print(f"role {ROLE} does not exist: run `flowbill migrate` first", file=sys.stderr)
            return 1
        verifier = conn.pgconn.encrypt_password(
            password.encode(), ROLE.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(verifier)
            )
        )
    print(f"role {ROLE} may log in with the password from FLOWBILL_GRAFANA_DB_PASSWORD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
