"""A project-local PostgreSQL+TimescaleDB and Mosquitto, for the demo, benchmarks and tests.

Everything lives under one state folder (`.state/` for `make demo`, a temporary folder per
test session): the cluster's data, the broker's persistence, their logs, `stack.json` (the
ports) and `flowbill.env` (shell `export` lines). Both run on free loopback ports, are reused
while they run, and are stopped by pid. Standard library only, in every module: `make stop`
runs this package with the system's python3, without the virtualenv. `scripts/setup.sh`
installs what it runs.

    python -m devstack.localstack up|down|env [--dir .state]     (also: flowbill stack ...)

By concern: `stack` (the ports, the state files, `up` and `down`), `postgres`, `mosquitto`,
`processes` (pid files and free ports), `files` (the state folder's layout and its lock),
`errors` and `command` (the command line).
"""

from devstack.localstack.command import main
from devstack.localstack.errors import StackError
from devstack.localstack.mosquitto import start_mosquitto, stop_mosquitto
from devstack.localstack.postgres import COMPONENT_ROLES, start_postgres, stop_postgres
from devstack.localstack.stack import LocalStack, down, up

__all__ = [
    "COMPONENT_ROLES",
    "LocalStack",
    "StackError",
    "down",
    "main",
    "start_mosquitto",
    "start_postgres",
    "stop_mosquitto",
    "stop_postgres",
    "up",
]
