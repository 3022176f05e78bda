"""The stack as a whole: its ports, `stack.json` and `flowbill.env`, and `up` and `down`."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from devstack.localstack import identity
from devstack.localstack.files import _locked, _Paths
from devstack.localstack.mosquitto import _mq_running_port, _stop_mosquitto, start_mosquitto
from devstack.localstack.postgres import (
    DB_USER,
    _ensure_database,
    _init_postgres,
    _pg_running_port,
    _stop_postgres,
    start_postgres,
)
from devstack.localstack.processes import _free_port, _port_free


@dataclass(frozen=True)
class LocalStack:
    root: Path
    pg_port: int
    mqtt_port: int
    database: str = "flowbill"
    # Devices' TLS listeners: with a client certificate, and with a password.
    tls_port: int = 0
    tls_password_port: int = 0

    @property
    def database_url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """The same server's `postgres` database, to create and drop databases from."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/postgres"

    def environment(self) -> dict[str, str]:
        paths = _Paths(self.root)
        env = {
            "FLOWBILL_DATABASE_URL": self.database_url,
            "FLOWBILL_MQTT_HOST": "127.0.0.1",
            "FLOWBILL_MQTT_PORT": str(self.mqtt_port),
            "FLOWBILL_MQTT_TLS_PORT": str(self.tls_port),
            "FLOWBILL_MQTT_TLS_PASSWORD_PORT": str(self.tls_password_port),
            "FLOWBILL_DEVICE_CA_FILE": str(paths.ca_dir / "ca.pem"),
            "FLOWBILL_DEVICE_CA_DIR": str(paths.ca_dir),
            "FLOWBILL_DEVICE_BROKER_DIR": str(paths.broker_dir),
            "FLOWBILL_MQTT_BROKER_PID_FILE": str(paths.mqpid),
        }
        accounts = identity.load_accounts(paths)
        if accounts is not None:
            env["FLOWBILL_MQTT_USERNAME"] = identity.SERVICE
            env["FLOWBILL_MQTT_PASSWORD"] = accounts.service_password
            env["FLOWBILL_MQTT_CONTROL_USERNAME"] = identity.ADMIN
            env["FLOWBILL_MQTT_CONTROL_PASSWORD"] = accounts.admin_password
        return env

    def settings_values(self) -> dict[str, str]:
        """The environment as Settings keyword arguments (`FLOWBILL_MQTT_PORT` → `mqtt_port`)."""
        return {k.removeprefix("FLOWBILL_").lower(): v for k, v in self.environment().items()}


def _load(root: Path) -> LocalStack | None:
    try:
        data = json.loads(_Paths(root).state.read_text())
        return LocalStack(
            root=root,
            pg_port=int(data["pg_port"]),
            mqtt_port=int(data["mqtt_port"]),
            database=str(data.get("database", "flowbill")),
            tls_port=int(data.get("tls_port", 0)),
            tls_password_port=int(data.get("tls_password_port", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(stack: LocalStack) -> None:
    paths = _Paths(stack.root)
    state = {
        "pg_port": stack.pg_port, "mqtt_port": stack.mqtt_port, "database": stack.database,
        "tls_port": stack.tls_port, "tls_password_port": stack.tls_password_port,
    }  # fmt: skip
    paths.state.write_text(json.dumps(state) + "\n")
    # It holds the service accounts' passwords: for its owner only.
    paths.env.touch(mode=0o600)
    paths.env.chmod(0o600)
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
        tls_ports = _tls_ports(paths, known, avoid=(pg_port, mqtt_port))
        stack = LocalStack(
            root=root, pg_port=pg_port, mqtt_port=mqtt_port, database=database,
            tls_port=tls_ports[0], tls_password_port=tls_ports[1],
        )  # fmt: skip
        identity.ensure(paths)
        _save(stack)
        if not (paths.pgdata / "PG_VERSION").exists():
            _init_postgres(paths)
        start_postgres(stack)
        _ensure_database(stack)
        start_mosquitto(stack)
        return stack


def _tls_ports(
    paths: _Paths, known: LocalStack | None, *, avoid: tuple[int, ...]
) -> tuple[int, int]:
    """The devices' TLS ports: the running broker's, else the remembered ones while free,
    else new ones."""
    if _mq_running_port(paths) is not None and known and known.tls_port and known.tls_password_port:
        return known.tls_port, known.tls_password_port
    ports: list[int] = []
    for wanted in (known.tls_port if known else 0, known.tls_password_port if known else 0):
        taken = (*avoid, *ports)
        ok = wanted and wanted not in taken and _port_free(wanted)
        ports.append(wanted if ok else _free_port(avoid=taken))
    return ports[0], ports[1]


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
