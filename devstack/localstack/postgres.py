"""The local PostgreSQL+TimescaleDB cluster: made, configured, started and stopped.

Its data lives in the state folder; as root, its programs run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
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
        [str(PG_BIN / "initdb"), "-D", str(paths.pgdata), "-U", DB_USER, "--auth=trust",
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


def _ensure_database(stack: LocalStack) -> None:
    psql = str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql"
    name_literal = "'" + stack.database.replace("'", "''") + "'"
    name_ident = '"' + stack.database.replace('"', '""') + '"'

    def run(url: str, sql: str) -> str:
        result = subprocess.run(
            [psql, url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"{sql!r} failed on {url}: {result.stderr.strip()}")
        return result.stdout.strip()

    if run(stack.admin_url, f"SELECT 1 FROM pg_database WHERE datname = {name_literal}") != "1":
        run(stack.admin_url, f"CREATE DATABASE {name_ident}")
    run(stack.database_url, "SET client_min_messages = warning; "
                            "CREATE EXTENSION IF NOT EXISTS timescaledb")  # fmt: skip
