"""The stack as a whole: its ports, `stack.json` and `flowbill.env`, and `up` and `down`."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from devstack.localstack import identity
from devstack.localstack.files import _locked, _Paths
from devstack.localstack.mosquitto import _mq_running_port, _stop_mosquitto, start_mosquitto
from devstack.localstack.postgres import (
    COMPONENT_ROLES,
    DB_USER,
    _ensure_database,
    _init_postgres,
    _pg_running_port,
    _stop_postgres,
    passwords,
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

    def _url(self, role: str, database: str) -> str:
        password = passwords(_Paths(self.root))[role]
        return f"postgresql://{role}:{password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def database_url(self) -> str:
        """The owner's: migrations, the command line's maintenance, the tests' own checks."""
        return self._url(DB_USER, self.database)

    @property
    def admin_url(self) -> str:
        """The same server's `postgres` database, to create and drop databases from."""
        return self._url(DB_USER, "postgres")

    def component_url(self, component: str) -> str:
        """The database URL a component connects with at run time: its own role
        (`api`, `ingest`, `billing`, `webhooks`; migration 0029 grants what each needs)."""
        return self._url(COMPONENT_ROLES[component], self.database)

    def environment(self) -> dict[str, str]:
        """What `flowbill.env` exports: the owner's URL (for `flowbill migrate` and the
        maintenance commands), each component's, which the demo hands its processes, and the
        broker's ports, device CA and service accounts."""
        paths = _Paths(self.root)
        env = {
            "FLOWBILL_DATABASE_URL": self.database_url,
            **{
                f"FLOWBILL_{component.upper()}_DATABASE_URL": self.component_url(component)
                for component in COMPONENT_ROLES
            },
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
        return {
            k.removeprefix("FLOWBILL_").lower(): v
            for k, v in self.environment().items()
            if not (k.endswith("_DATABASE_URL") and k != "FLOWBILL_DATABASE_URL")
        }


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
    # Holds passwords: readable by whoever runs the stack only.
    fd = os.open(paths.env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"export {k}={v}\n" for k, v in stack.environment().items()))
    paths.env.chmod(0o600)


def up(root: Path, *, database: str = "flowbill") -> LocalStack:
    """Start (or reuse, when they run) the cluster and the broker under root.

    Creates the database with TimescaleDB in it, writes root/stack.json and root/flowbill.env.
    Idempotent: a second call while both run takes well under a second.
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # passwords, keys and the cluster's data live here
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
