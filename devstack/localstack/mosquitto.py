"""The local Mosquitto broker: its config, started and stopped, its sessions kept on disk."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from devstack.localstack.errors import StackError
from devstack.localstack.files import _Paths, _tail
from devstack.localstack.identity import CRL, DYNSEC_PLUGIN, PASSWORDS, SERVER_CERT, SERVER_KEY
from devstack.localstack.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    _port_answers,
    _running_pid,
    _wait_gone,
)

if TYPE_CHECKING:
    from devstack.localstack.stack import LocalStack

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CA_CERT_FILE = "ca.pem"  # as devices.ca names it (this package imports no third-party code)


def _write_mosquitto_conf(stack: LocalStack) -> None:
    paths = _Paths(stack.root)
    paths.mqdir.mkdir(parents=True, exist_ok=True)
    # As root, mosquitto would switch to the `mosquitto` user, which cannot write the
    # persistence file under a root-owned folder: it stays whoever we are.
    user = pwd.getpwuid(os.geteuid()).pw_name
    devices = paths.devices
    paths.mqconf.write_text(
        f"""# Flowbill's local broker: loopback only, nobody anonymous, nothing dropped, sessions
# kept. Service accounts live in dynamic security; devices come in over TLS, with a client
# certificate from the device CA or with a password the device reconciler wrote here.
per_listener_settings false
allow_anonymous false
plugin {DYNSEC_PLUGIN}
plugin_opt_config_file {paths.dynsec}
password_file {paths.broker_dir / PASSWORDS}
acl_file {paths.acl}
user {user}
pid_file {paths.mqpid}

# The workers, the API and the load generators: plain MQTT, loopback only.
listener {stack.mqtt_port} 127.0.0.1

# Certificate devices: the certificate's CN (the ICCID) is the user name.
listener {stack.tls_port} 127.0.0.1
cafile {paths.ca_dir / CA_CERT_FILE}
certfile {devices / SERVER_CERT}
keyfile {devices / SERVER_KEY}
require_certificate true
use_identity_as_username true
crlfile {paths.broker_dir / CRL}

# Password devices: TLS without a client certificate; the user name is the ICCID.
listener {stack.tls_password_port} 127.0.0.1
certfile {devices / SERVER_CERT}
keyfile {devices / SERVER_KEY}

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
# Per client, at most 16 MiB of QoS 1 messages in flight; beyond it QoS 1 messages wait in
# the queue (never dropped) and QoS 0 ones are dropped. See deploy/mosquitto/mosquitto.conf.
max_inflight_bytes 16777216
# Reports a little over 64 KiB must still reach Flowbill, which rejects and records them;
# larger packets disconnect the sender.
max_packet_size 69632

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
