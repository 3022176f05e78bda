"""Our services' processes (by pid file, never by name) and free loopback ports."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


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
