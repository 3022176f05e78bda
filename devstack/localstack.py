"""A project-local PostgreSQL+TimescaleDB and Mosquitto, for the demo, benchmarks and tests.

Everything lives under one state folder (`.state/` for `make demo`, a temporary folder per
test session): the cluster's data, the broker's persistence, their logs, `stack.json` (the
ports) and `flowbill.env` (shell `export` lines). Both run on free loopback ports, are reused
while they run, and are stopped by pid. Standard library only: `make stop` runs this module
with the system's python3, without the virtualenv. `scripts/setup.sh` installs what it runs.

    python -m devstack.localstack up|down|env [--dir .state]     (also: flowbill stack ...)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("FLOWBILL_PG_BIN", "/usr/lib/postgresql/15/bin"))
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DB_USER = "flowbill"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
# Our own settings, rewritten at every start; postgresql.conf includes this file last.
PG_CONF_NAME = "flowbill.conf"


@dataclass(frozen=True)
class LocalStack:
    root: Path
    pg_port: int
    mqtt_port: int
    database: str = "flowbill"

    @property
    def database_url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """The same server's `postgres` database, to create and drop databases from."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/postgres"

    def environment(self) -> dict[str, str]:
        return {
            "FLOWBILL_DATABASE_URL": self.database_url,
            "FLOWBILL_MQTT_HOST": "127.0.0.1",
            "FLOWBILL_MQTT_PORT": str(self.mqtt_port),
        }


class StackError(RuntimeError):
    """A service did not start or stop; the message ends with its log's tail."""


# --- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def pgpid(self) -> Path:
        return self.pgdata / "postmaster.pid"

    @property
    def pglog(self) -> Path:
        return self.root / "postgres.log"

    @property
    def mqdir(self) -> Path:
        return self.root / "mosquitto"

    @property
    def mqconf(self) -> Path:
        return self.mqdir / "mosquitto.conf"

    @property
    def mqpid(self) -> Path:
        return self.mqdir / "mosquitto.pid"

    @property
    def mqlog(self) -> Path:
        return self.root / "mosquitto.log"

    @property
    def mqstderr(self) -> Path:
        return self.mqdir / "stderr.log"

    @property
    def state(self) -> Path:
        return self.root / "stack.json"

    @property
    def env(self) -> Path:
        return self.root / "flowbill.env"

    @property
    def lock(self) -> Path:
        return self.root / ".stack.lock"

    @property
    def sockets(self) -> Path:
        # Unix socket paths are limited to 107 bytes, and pytest's temporary folders are long:
        # then the socket lives in a short folder of its own under /tmp.
        path = self.root / "postgres" / "run"
        if len(str(path)) > 80:
            digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
            path = Path(tempfile.gettempdir()) / f"flowbill-pg-{digest}"
        return path


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return f"(no {path})"


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """One `up` or `down` at a time per state folder (make demo and make bench may race)."""
    with paths.lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- processes and ports -----------------------------------------------------------------


def _running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in pid_file if that process runs and its command line names marker.

    A pid file that outlived its process (a killed service, a reboot) may name a pid that is
    now someone else's: that one is not ours, never to be signalled.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if marker.encode() in cmdline and _alive(pid) else None


def _alive(pid: int) -> bool:
    """Whether pid runs. A zombie does not: a daemon's parent is init, which may take its
    time to reap it (a second or two on some machines)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as the servers use it: connections in TIME_WAIT do not make a port busy.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port(*, avoid: tuple[int, ...] = ()) -> int:
    """A free loopback port below the kernel's ephemeral range where possible.

    A port the kernel hands out for outgoing connections (what binding to port 0 returns) can,
    while our server is stopped for a restart test, be taken by a client's own socket: a
    reconnecting client may even connect to itself. Ports below that range avoid both.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low > 20000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(15000, low)
            if port not in avoid and _port_free(port):
                return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


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


# --- PostgreSQL --------------------------------------------------------------------------


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


# --- Mosquitto ---------------------------------------------------------------------------


def _write_mosquitto_conf(stack: LocalStack) -> None:
    paths = _Paths(stack.root)
    paths.mqdir.mkdir(parents=True, exist_ok=True)
    # As root, mosquitto would switch to the `mosquitto` user, which cannot write the
    # persistence file under a root-owned folder: it stays whoever we are.
    user = pwd.getpwuid(os.geteuid()).pw_name
    paths.mqconf.write_text(
        f"""# Flowbill's local broker: loopback only, anonymous, nothing dropped, sessions kept.
listener {stack.mqtt_port} 127.0.0.1
allow_anonymous true
user {user}
pid_file {paths.mqpid}

# Persistent sessions and their queued QoS 1 messages survive a restart: SIGTERM saves the
# store on the way out; the interval bounds what a crash (SIGKILL) loses. Saving rewrites the
# whole store, so not every second: with a large backlog that would stall the broker.
persistence true
persistence_location {paths.mqdir}/
autosave_on_changes false
autosave_interval 10
persistent_client_expiration 14d

# The defaults (1000 queued messages per client) silently drop QoS 1 reports for a consumer
# that falls behind: queue without limit instead.
max_queued_messages 0
max_queued_bytes 0
# Mosquitto 2.0 sends an MQTT v5 client at most its own Receive Maximum; this number (default
# 20) is the limit for v3 clients and the Receive Maximum the broker announces: 0 is none.
max_inflight_messages 0
# Reports over 64 KiB must still reach Flowbill, which rejects and records them.
max_packet_size 1048576

log_dest file {paths.mqlog}
log_type error
log_type warning
log_type notice
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""
    )


def _mq_running(paths: _Paths) -> int | None:
    return _running_pid(paths.mqpid, str(paths.mqconf))


def _mq_running_port(paths: _Paths) -> int | None:
    if _mq_running(paths) is None:
        return None
    try:
        for line in paths.mqconf.read_text().splitlines():
            if line.startswith("listener "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def start_mosquitto(stack: LocalStack) -> None:
    """Start the broker on its port, with its saved sessions (a no-op when it already runs)."""
    paths = _Paths(stack.root)
    if _mq_running(paths) is None:
        with contextlib.suppress(FileNotFoundError):
            paths.mqpid.unlink()  # stale: its process is gone or is not ours
        _launch_mosquitto(stack)
    deadline = time.monotonic() + START_TIMEOUT
    while not _port_answers(stack.mqtt_port):
        if _mq_running(paths) is None:
            raise _mosquitto_failure(stack, "exited")
        if time.monotonic() > deadline:
            raise _mosquitto_failure(stack, "does not accept connections")
        time.sleep(0.02)


def _mosquitto_failure(stack: LocalStack, why: str) -> StackError:
    paths = _Paths(stack.root)
    return StackError(
        f"Mosquitto {why} on port {stack.mqtt_port}:\n{_tail(paths.mqstderr)}\n"
        f"(log {paths.mqlog}):\n{_tail(paths.mqlog)}"
    )


def _launch_mosquitto(stack: LocalStack) -> None:
    paths = _Paths(stack.root)
    _write_mosquitto_conf(stack)
    with paths.mqstderr.open("w") as err:
        result = subprocess.run(
            [MOSQUITTO, "-d", "-c", str(paths.mqconf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise _mosquitto_failure(stack, f"exited with {result.returncode}")
    # With -d the command returns once it has forked; the daemon writes its pid file next.
    deadline = time.monotonic() + 5
    while _mq_running(paths) is None:
        if time.monotonic() > deadline:
            raise _mosquitto_failure(stack, "did not start")
        time.sleep(0.01)


def _stop_mosquitto(paths: _Paths) -> None:
    pid = _mq_running(paths)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # it saves its store, then exits
        if not _wait_gone(pid, STOP_TIMEOUT):
            raise StackError(f"Mosquitto (pid {pid}) did not stop:\n{_tail(paths.mqlog)}")
    with contextlib.suppress(FileNotFoundError):
        paths.mqpid.unlink()


def stop_mosquitto(stack: LocalStack) -> None:
    """Stop the broker; it saves its persistent sessions and queued messages on the way."""
    _stop_mosquitto(_Paths(stack.root))


# --- the stack ---------------------------------------------------------------------------


def _load(root: Path) -> LocalStack | None:
    try:
        data = json.loads(_Paths(root).state.read_text())
        return LocalStack(
            root=root,
            pg_port=int(data["pg_port"]),
            mqtt_port=int(data["mqtt_port"]),
            database=str(data.get("database", "flowbill")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(stack: LocalStack) -> None:
    paths = _Paths(stack.root)
    state = {"pg_port": stack.pg_port, "mqtt_port": stack.mqtt_port, "database": stack.database}
    paths.state.write_text(json.dumps(state) + "\n")
    paths.env.write_text("".join(f"export {k}={v}\n" for k, v in stack.environment().items()))


def up(root: Path, *, database: str = "flowbill") -> LocalStack:
    """Start (or reuse, when they run) the cluster and the broker under root.

    Creates the database with TimescaleDB in it, writes root/stack.json and root/flowbill.env.
    Idempotent: a second call while both run takes well under a second.
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    paths = _Paths(root)
    with _locked(paths):
        known = _load(root)
        # A running service keeps its port; a stopped one gets its remembered port back unless
        # someone else has taken it since.
        pg_port = _pg_running_port(paths)
        if pg_port is None:
            pg_port = known.pg_port if known and _port_free(known.pg_port) else None
        if pg_port is None:
            pg_port = _free_port()
        mqtt_port = _mq_running_port(paths)
        if mqtt_port is None:
            wanted = known.mqtt_port if known else None
            ok = wanted is not None and wanted != pg_port and _port_free(wanted)
            mqtt_port = wanted if ok and wanted is not None else _free_port(avoid=(pg_port,))
        stack = LocalStack(root=root, pg_port=pg_port, mqtt_port=mqtt_port, database=database)
        _save(stack)
        if not (paths.pgdata / "PG_VERSION").exists():
            _init_postgres(paths)
        start_postgres(stack)
        _ensure_database(stack)
        start_mosquitto(stack)
        return stack


def down(root: Path) -> None:
    """Stop the broker and the cluster by their pids; their data stays. Fine when none runs."""
    root = root.resolve()
    paths = _Paths(root)
    if not root.is_dir():
        return
    with _locked(paths):
        _stop_mosquitto(paths)
        _stop_postgres(paths)
        if paths.sockets.parent != root / "postgres":
            with contextlib.suppress(OSError):
                paths.sockets.rmdir()  # the short socket folder under /tmp, if empty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flowbill stack",
        description="The local PostgreSQL+TimescaleDB and Mosquitto under a state folder.",
    )
    parser.add_argument("action", choices=["up", "down", "env"])
    parser.add_argument("--dir", default=".state", help="the state folder (default: .state)")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    try:
        if args.action == "down":
            down(root)
            return 0
        stack = up(root) if args.action == "up" else _load(root)
    except (StackError, subprocess.SubprocessError, OSError) as exc:
        print(f"flowbill stack {args.action}: {exc}", file=sys.stderr)
        return 1
    if stack is None:
        print(f"no stack in {root}; run `flowbill stack up --dir {args.dir}`", file=sys.stderr)
        return 1
    for key, value in stack.environment().items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
