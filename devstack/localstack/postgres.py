"""The local PostgreSQL+TimescaleDB cluster: made, configured, started and stopped.

Its data lives in the state folder; as root, its programs run as the `postgres` user.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.localstack.errors import StackError
from devstack.localstack.files import _Paths, _tail
from devstack.localstack.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    _alive,
    _running_pid,
    _wait_gone,
)

if TYPE_CHECKING:
    from devstack.localstack.stack import LocalStack

PG_BIN = Path(os.environ.get("FLOWBILL_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_USER = "flowbill"
# The components' own roles (made NOLOGIN by migration 0029, which grants what each needs):
# here they log in with passwords of their own, as in production.
COMPONENT_ROLES = {
    "api": "flowbill_api",
    "ingest": "flowbill_ingest",
    "billing": "flowbill_billing",
    "webhooks": "flowbill_webhooks",
}
# Our own settings, rewritten at every start; postgresql.conf includes this file last.
PG_CONF_NAME = "flowbill.conf"


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_pg(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Runs a PostgreSQL program, its output captured; as the postgres user when we are root
    (the server refuses root). From "/": started in a folder it cannot enter (pytest's, when it
    runs as postgres), a PostgreSQL program fails to find its own executable.
    """
    command = ["runuser", "-u", "postgres", "--", *args] if _as_root() else args
    return subprocess.run(
        command, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )


def _chown_postgres(path: Path) -> None:
    if _as_root():
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _let_postgres_in(path: Path) -> None:
    """As root, let the postgres user traverse every folder above path (path's own mode is
    left alone: PostgreSQL insists its data folder is 0700).

    The cluster's data stays inside the state folder, so that it goes with it (pytest deletes
    old temporary folders). Those folders are root's and often 0700 (/tmp/pytest-of-root/...):
    each one on the way gets o+x, which lets others pass through, never list or read. pytest
    resets /tmp/pytest-of-root to 0700 when another session starts, so this runs again before
    every start and stop. Fine for a throwaway local cluster that trusts loopback anyway.
    """
    if not _as_root():
        return
    for folder in path.parents:
        if folder == folder.parent:
            break
        with contextlib.suppress(OSError):
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _pg_running(paths: _Paths) -> int | None:
    return _running_pid(paths.pgpid, str(paths.pgdata))


def _pg_running_port(paths: _Paths) -> int | None:
    """The port of the running cluster, from its postmaster.pid (its 4th line)."""
    if _pg_running(paths) is None:
        return None
    try:
        return int(paths.pgpid.read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None


def _init_postgres(paths: _Paths) -> None:
    if not (PG_BIN / "initdb").exists():
        raise StackError(f"no PostgreSQL 15 in {PG_BIN}: run scripts/setup.sh")
    if paths.pgdata.exists():  # a half-made cluster from an interrupted initdb
        shutil.rmtree(paths.pgdata)
    paths.pgdata.mkdir(parents=True)
    _chown_postgres(paths.pgdata.parent)
    _chown_postgres(paths.pgdata)
    paths.pgdata.chmod(0o700)
    _let_postgres_in(paths.pgdata)
    result = _run_pg(
        [str(PG_BIN / "initdb"), "-D", str(paths.pgdata), "-U", DB_USER, "--auth-local=peer",
         "--auth-host=scram-sha-256",
         "--encoding=UTF8", "--locale=C.UTF-8"]
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"initdb failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    with (paths.pgdata / "postgresql.conf").open("a") as fh:
        fh.write(f"\n# Flowbill's local stack: its settings, written at every start\n"
                 f"include_if_exists = '{PG_CONF_NAME}'\n")  # fmt: skip


def _write_postgres_conf(stack: LocalStack) -> None:
    paths = _Paths(stack.root)
    conf = paths.pgdata / "postgresql.conf"
    if PG_CONF_NAME not in conf.read_text():  # a cluster made before this file existed
        with conf.open("a") as fh:
            fh.write(f"\ninclude_if_exists = '{PG_CONF_NAME}'\n")
    ours = paths.pgdata / PG_CONF_NAME
    ours.write_text(
        "# Written by devstack.localstack at every start: a throwaway local cluster.\n"
        f"port = {stack.pg_port}\n"
        "listen_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = {_quote_conf(str(paths.sockets))}\n"
        "shared_preload_libraries = 'timescaledb'\n"
        "timescaledb.telemetry_level = off\n"
        "max_connections = 200\n"
        "shared_buffers = 256MB\n"
        "max_wal_size = 2GB\n"
        # Kept on: the tests kill and restart things and expect nothing committed to be lost.
        "fsync = on\n"
        "synchronous_commit = on\n"
        "timezone = 'UTC'\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
    )
    _chown_postgres(ours)
    # Passwords over TCP, for every role; the local socket only for the stack's owner, and
    # only for the OS user who runs the stack (peer, mapped): it sets the passwords.
    hba = paths.pgdata / "pg_hba.conf"
    hba.write_text(
        "# Written by devstack.localstack at every start.\n"
        f"local all {DB_USER} peer map=stack\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    ident = paths.pgdata / "pg_ident.conf"
    ident.write_text(
        "# Written by devstack.localstack at every start.\n"
        f"stack {pwd.getpwuid(os.geteuid()).pw_name} {DB_USER}\n"
    )
    for written in (hba, ident):
        written.chmod(0o600)
        _chown_postgres(written)


def _wait_pg_ready(stack: LocalStack, timeout: float) -> None:
    paths = _Paths(stack.root)
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(stack.pg_port),
             "-U", DB_USER, "-d", "postgres", "-t", "2"],
            stdin=subprocess.DEVNULL, capture_output=True, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            return
        if _pg_running(paths) is None:
            raise StackError(f"PostgreSQL exited (log {paths.pglog}):\n{_tail(paths.pglog)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"PostgreSQL on port {stack.pg_port} does not accept connections "
                f"(log {paths.pglog}):\n{_tail(paths.pglog)}"
            )
        time.sleep(0.1)


def _clear_stale_pg_files(paths: _Paths) -> None:
    """Called while our postmaster is not running: removes what would stop a new one.

    The socket folder is this cluster's own, so its lock files are stale. A postmaster.pid
    whose process is gone stays: PostgreSQL itself replaces it after checking that no backend
    of the dead server still uses its shared memory. One whose pid now belongs to a live,
    different process (the pid was reused, e.g. after a reboot) is removed, as is an unreadable
    one. A zombie's (a killed server that init has not reaped yet) stays: the caller retries.
    """
    for leftover in paths.sockets.glob(".s.PGSQL.*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    try:
        pid = int(paths.pgpid.read_text().split()[0])
    except FileNotFoundError:
        return
    except (OSError, ValueError, IndexError):
        paths.pgpid.unlink(missing_ok=True)
        return
    if _alive(pid):
        paths.pgpid.unlink(missing_ok=True)


# What pg_ctl start fails on for a moment after a crash (kill -9): try again.
_TRANSIENT = ("already exists", "is still in use", "Is another postmaster")


def start_postgres(stack: LocalStack) -> None:
    """Start the cluster on its port, with its data (a no-op when it already runs)."""
    paths = _Paths(stack.root)
    if _pg_running(paths) is not None:
        _wait_pg_ready(stack, START_TIMEOUT)
        return
    paths.sockets.mkdir(parents=True, exist_ok=True)
    _chown_postgres(paths.sockets)
    _let_postgres_in(paths.sockets)
    _let_postgres_in(paths.pgdata)
    paths.pglog.touch()
    _chown_postgres(paths.pglog)
    _write_postgres_conf(stack)
    deadline = time.monotonic() + 20
    while True:
        _clear_stale_pg_files(paths)
        log_size = paths.pglog.stat().st_size
        result = _run_pg(
            [str(PG_BIN / "pg_ctl"), "-D", str(paths.pgdata), "-l", str(paths.pglog),
             "-w", "-t", str(int(START_TIMEOUT)), "start"]
        )  # fmt: skip
        if result.returncode == 0 or _pg_running(paths) is not None:
            break
        with paths.pglog.open("rb") as fh:
            fh.seek(log_size)
            news = fh.read().decode(errors="replace")
        if time.monotonic() > deadline or not any(t in news for t in _TRANSIENT):
            raise StackError(
                f"PostgreSQL did not start on port {stack.pg_port}: {result.stderr.strip()}\n"
                f"(log {paths.pglog}):\n{_tail(paths.pglog)}"
            )
        time.sleep(0.25)
    _wait_pg_ready(stack, START_TIMEOUT)


def _stop_postgres(paths: _Paths) -> None:
    pid = _pg_running(paths)
    if pid is None:
        return
    _let_postgres_in(paths.pgdata)
    _run_pg(
        [str(PG_BIN / "pg_ctl"), "-D", str(paths.pgdata), "-m", "fast", "-w",
         "-t", str(int(STOP_TIMEOUT)), "stop"]
    )  # fmt: skip
    if _wait_gone(pid, 1):
        return
    # pg_ctl could not do it (it failed to reach the data folder?): the same fast shutdown
    # is SIGINT to the postmaster.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if not _wait_gone(pid, STOP_TIMEOUT):
        raise StackError(f"PostgreSQL (pid {pid}) did not stop:\n{_tail(paths.pglog)}")


def stop_postgres(stack: LocalStack) -> None:
    """Stop the cluster (fast shutdown: sessions are cut, committed data is kept)."""
    _stop_postgres(_Paths(stack.root))


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of a password (RFC 7677), as libpq makes it: the
    server only ever sees this, never the password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def passwords(paths: _Paths) -> dict[str, str]:
    """The owner's and the components' passwords, made once and kept 0600 in the state folder."""
    try:
        known: dict[str, str] = json.loads(paths.passwords.read_text())
    except (OSError, ValueError):
        known = {}
    wanted = [DB_USER, *COMPONENT_ROLES.values()]
    if all(isinstance(known.get(role), str) for role in wanted):
        return known
    made = {role: known.get(role) or secrets.token_urlsafe(32) for role in wanted}
    fd = os.open(paths.passwords, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(made, fh)
    return made


def _ensure_database(stack: LocalStack) -> None:
    """Over the local socket, as the owner: the roles' passwords (again at every start, so a
    cluster made before passwords gets them), the database and TimescaleDB in it."""
    paths = _Paths(stack.root)
    psql = str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql"
    name_literal = "'" + stack.database.replace("'", "''") + "'"
    name_ident = '"' + stack.database.replace('"', '""') + '"'

    def run(database: str, sql: str) -> str:
        conninfo = f"host={paths.sockets} port={stack.pg_port} user={DB_USER} dbname={database}"
        result = subprocess.run(
            [psql, conninfo, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"{sql[:200]!r} failed on {database}: {result.stderr.strip()}")
        return result.stdout.strip()

    known = passwords(paths)
    statements = [f"ALTER ROLE {DB_USER} PASSWORD '{scram_verifier(known[DB_USER])}'"]
    for role in COMPONENT_ROLES.values():
        verifier = scram_verifier(known[role])
        statements.append(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
            f"CREATE ROLE {role} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION; "
            f"END IF; END $$"
        )
        statements.append(f"ALTER ROLE {role} LOGIN PASSWORD '{verifier}'")
    run("postgres", "; ".join(statements))
    if run("postgres", f"SELECT 1 FROM pg_database WHERE datname = {name_literal}") != "1":
        run("postgres", f"CREATE DATABASE {name_ident}")
    run(stack.database, "SET client_min_messages = warning; "
                        "CREATE EXTENSION IF NOT EXISTS timescaledb")  # fmt: skip
