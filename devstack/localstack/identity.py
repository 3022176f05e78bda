"""The local broker's identities: the device CA, the broker's TLS certificate, the service
accounts and their dynamic-security roles, the device ACL patterns.

Made once at `up` (files 0600 under the state folder) and kept: a restart reuses them. The
service accounts, each with a random password, live in dynamic security:
- `flowbill-admin` drives `$CONTROL/dynamic-security/v1` (the device reconciler);
- `flowbill-service` is the API, ingest workers and billing (reads usage, publishes
  coverage); on the local stack it may also publish usage for any SIM, for the load
  generators of tests and benchmarks (the shipped broker has no such role).
Devices are not in dynamic security: certificate devices are vouched for by the CA (their
CN is the user name), password devices by the password file the reconciler writes, and the
ACL patterns give each only its own topics.

Standard library only at import time (`make stop` runs this package without the
virtualenv); the X.509 work is imported when `up` needs it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devstack.localstack.files import _Paths

ADMIN = "flowbill-admin"
SERVICE = "flowbill-service"
DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
PASSWORDS = "passwords"
CRL = "crl.pem"
DEVICE_ACL = """# Devices: the user name is the ICCID (a certificate's CN, or a password user name).
# Each may publish only its own usage reports and read only its own coverage message.
pattern write flowbill/v1/sims/%u/usage
pattern read flowbill/v1/sims/%u/coverage
"""


@dataclass(frozen=True)
class Accounts:
    admin_password: str
    service_password: str


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def load_accounts(paths: _Paths) -> Accounts | None:
    try:
        data = json.loads(paths.accounts.read_text())
        return Accounts(str(data["admin_password"]), str(data["service_password"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dynsec_client(username: str, password: str, roles: list[str]) -> dict[str, object]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return {
        "username": username,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": 101,
        "roles": [{"rolename": r} for r in roles],
    }


def _acl(acltype: str, topic: str) -> dict[str, object]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def _dynsec_config(accounts: Accounts) -> dict[str, object]:
    control = "$CONTROL/dynamic-security/#"
    return {
        # Nothing by default: a known client gets what its roles grant; anyone else (a
        # device) falls through to the ACL file's patterns.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            _dynsec_client(ADMIN, accounts.admin_password, ["flowbill-control"]),
            _dynsec_client(
                SERVICE, accounts.service_password, ["flowbill-service", "flowbill-loadgen"]
            ),
        ],
        "groups": [],
        "roles": [
            {
                "rolename": "flowbill-control",
                "acls": [
                    _acl("publishClientSend", control),
                    _acl("publishClientReceive", control),
                    _acl("subscribePattern", control),
                ],
            },
            {
                "rolename": "flowbill-service",
                "acls": [
                    _acl("subscribePattern", "flowbill/#"),
                    _acl("subscribePattern", "$share/+/flowbill/#"),
                    _acl("publishClientReceive", "flowbill/#"),
                    _acl("publishClientSend", "flowbill/v1/sims/+/coverage"),
                ],
            },
            {"rolename": "flowbill-loadgen", "acls": [_acl("publishClientSend", "flowbill/#")]},
        ],
    }


def ensure(paths: _Paths) -> Accounts:
    """Make what is missing: accounts, dynamic-security config, ACL, CA, server certificate,
    an empty password file and CRL (the reconciler rewrites both from the database)."""
    accounts = load_accounts(paths)
    if accounts is None:
        accounts = Accounts(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        _write_private(
            paths.accounts,
            json.dumps(
                {
                    "admin_password": accounts.admin_password,
                    "service_password": accounts.service_password,
                }
            ),
        )
        # New accounts: the broker's copy must follow (a kept one would hold old hashes).
        paths.dynsec.unlink(missing_ok=True)
    if not paths.dynsec.exists():
        _write_private(paths.dynsec, json.dumps(_dynsec_config(accounts), indent=1))
    _write_private(paths.acl, DEVICE_ACL)
    broker = paths.broker_dir
    if not (broker / PASSWORDS).exists():
        _write_private(broker / PASSWORDS, "")
    _ensure_certificates(paths)
    return accounts


def _ensure_certificates(paths: _Paths) -> None:
    from devices.ca import DeviceCa

    now = datetime.now(UTC)
    ca = DeviceCa.load_or_create(paths.ca_dir, now=now, name="Flowbill local device CA")
    if not (paths.devices / SERVER_KEY).exists():
        cert, key = ca.server_certificate(["localhost", "127.0.0.1"], now=now, days=825)
        _write_private(paths.devices / SERVER_CERT, cert)
        _write_private(paths.devices / SERVER_KEY, key)
    if not (paths.broker_dir / CRL).exists():
        crl = ca.crl([], now=now, valid_for=timedelta(days=30))
        _write_private(paths.broker_dir / CRL, crl.decode())
