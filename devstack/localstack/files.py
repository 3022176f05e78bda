"""Where everything lives under a state folder, and one `up` or `down` at a time per folder."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


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
    def devices(self) -> Path:
        """Device identity: the CA store, the broker's TLS files, the service accounts."""
        return self.root / "devices"

    @property
    def ca_dir(self) -> Path:
        return self.devices / "ca"

    @property
    def broker_dir(self) -> Path:
        """What the device reconciler writes and the broker reads: passwords and the CRL."""
        return self.devices / "broker"

    @property
    def accounts(self) -> Path:
        return self.devices / "service-accounts.json"

    @property
    def dynsec(self) -> Path:
        return self.mqdir / "dynamic-security.json"

    @property
    def acl(self) -> Path:
        return self.mqdir / "acl"

    @property
    def state(self) -> Path:
        return self.root / "stack.json"

    @property
    def env(self) -> Path:
        return self.root / "flowbill.env"

    @property
    def passwords(self) -> Path:
        return self.root / "db-passwords.json"

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
