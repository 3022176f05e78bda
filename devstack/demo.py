"""`flowbill demo`: the API and two ingest workers, a simulated fleet, and what arrived.

The API and the workers keep running after the demo so that its URLs work; `make stop`
(or `python -m devstack.demo stop`) stops them by their pids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from devstack import billing_demo
from devstack.iot_cards_demo import run_iot_demo
from devstack.wallet_demo import run_wallet_demo
from flowbill.periods import Calendar, earliest_open, format_period
from flowbill.settings import CALLBACK_PARTIES, Settings, get_settings
from flowbill.units import MB
from simulator.fleet.identities import (
    DeviceIdentity,
    DeviceListeners,
    device_client,
    identities_from,
    sendable,
)

STATE = Path(os.environ.get("FLOWBILL_STATE_DIR", ".state"))


def _demo_dir(state: Path) -> Path:
    path = state / "demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_services(state: Path) -> None:
    """Stop the processes an earlier demo left running."""
    pids_file = state / "demo" / "pids.json"
    if not pids_file.exists():
        return
    pids: dict[str, int] = json.loads(pids_file.read_text())
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    pids_file.unlink()


def _as(component: str, env: dict[str, str]) -> dict[str, str]:
    """A component's environment: its own database role (`flowbill.env` exports each one's
    URL), never the owner's, which migrations and the demo's own checks use."""
    own = env.get(f"FLOWBILL_{component.upper()}_DATABASE_URL")
    return env if own is None else {**env, "FLOWBILL_DATABASE_URL": own}


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(url: str, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not become ready; see {log}")


def _metric_total(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _operator_key(settings: Settings, state: Path, api: str) -> str:
    key_file = _demo_dir(state) / "operator.key"
    if key_file.exists():
        key = key_file.read_text().strip()
        if httpx.get(f"{api}/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200:
            return key
    subprocess.run(
        [sys.executable, "-m", "cli", "create-operator-key", "--name", "demo operator",
         "--key-file", str(key_file)],
        check=True, env=os.environ.copy(), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return key_file.read_text().strip()


def _device_listeners(settings: Settings, folder: Path) -> DeviceListeners:
    if not (settings.mqtt_tls_port and settings.mqtt_tls_password_port and settings.device_ca_file):
        raise SystemExit("no device TLS listeners: run `flowbill stack up` and source its env")
    return DeviceListeners(
        host=settings.mqtt_host, certificate_port=settings.mqtt_tls_port,
        password_port=settings.mqtt_tls_password_port, ca_file=settings.device_ca_file,
        folder=folder,
    )  # fmt: skip


def _wait_accepted(listeners: DeviceListeners, identities: dict[str, DeviceIdentity]) -> None:
    """Until the broker accepts a password device: the reconciler has given it the new ones."""
    import aiomqtt

    sample = next((i for i in identities.values() if i.kind == "password"), None)
    if sample is None:
        return

    async def accepted() -> bool:
        try:
            async with device_client(listeners, sample, in_flight=1):
                return True
        except aiomqtt.MqttError:
            return False

    deadline = time.monotonic() + 30
    while not asyncio.run(accepted()):
        if time.monotonic() > deadline:
            raise SystemExit("the broker does not accept the new devices; see devices.log")
        time.sleep(0.2)


def run_demo(*, seconds: float, state: Path = STATE) -> int:
    """Run the metering demo and print sent versus stored."""
    from simulator.fleet.options import SimulationOptions
    from simulator.fleet.plan import plan_fleet
    from simulator.fleet.publish import publish_plan
    from simulator.fleet.summary import summarize

    settings = get_settings()
    stop_services(state)
    logs = _demo_dir(state)
    api_port, gateway_port, iot_gateway_port = _free_port(), _free_port(), _free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "FLOWBILL_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
        "FLOWBILL_IOT_GATEWAY_URL": f"http://127.0.0.1:{iot_gateway_port}",
        "FLOWBILL_PUBLIC_URL": api,
        # Each outside party signs its callbacks with its own secret.
        **{
            f"FLOWBILL_{party.upper()}_CALLBACK_SECRET": secrets.token_hex(32)
            for party in CALLBACK_PARTIES
        },
        "FLOWBILL_GATEWAY_TIMEOUT_SECONDS": "2",
        "FLOWBILL_RECONCILE_GRACE_SECONDS": "4",
    }
    processes = {
        "api": _spawn(["serve", "--port", str(api_port)], _as("api", env), logs / "api.log"),
        # Slow, sometimes late (callbacks), sometimes applying a request and losing the answer.
        "gateways": _spawn(
            ["gateway-simulator", "--port", str(gateway_port), "--latency", "0.01", "0.2",
             "--pending-rate", "0.2", "--settle-delay", "2", "--lost-response-rate", "0.05",
             "--hang", "3", "--seed", "7"],
            _as("api", env), logs / "gateways.log",
        ),
        # Identity checks (asynchronous, by signed callback) and the invoicing authority.
        "iot-gateways": _spawn(
            ["iot-gateway-simulator", "--port", str(iot_gateway_port)], _as("api", env),
            logs / "iot-gateways.log",
        ),
    }  # fmt: skip
    worker_ports = []
    for n in (1, 2):
        port = _free_port()
        worker_ports.append(port)
        worker_env = {
            **env,
            "FLOWBILL_INGEST_CLIENT_ID": f"flowbill-demo-ingest-{n}",
            "FLOWBILL_INGEST_METRICS_PORT": str(port),
        }
        processes[f"ingest-{n}"] = _spawn(
            ["ingest"], _as("ingest", worker_env), logs / f"ingest-{n}.log"
        )
    # Keeps the broker's device passwords and CRL in line with the database.
    processes["devices"] = _spawn(["devices", "reconcile"], _as("api", env), logs / "devices.log")
    (logs / "pids.json").write_text(json.dumps({k: p.pid for k, p in processes.items()}))
    _wait_ready(f"{api}/readyz", "the API", processes["api"], logs / "api.log")
    for n, port in enumerate(worker_ports, start=1):
        _wait_ready(
            f"http://127.0.0.1:{port}/readyz",
            f"ingest worker {n}",
            processes[f"ingest-{n}"],
            logs / f"ingest-{n}.log",
        )
    key = _operator_key(settings, state, api)
    auth = {"Authorization": f"Bearer {key}"}

    options = SimulationOptions(
        vehicles=200,
        iot_sims=50,
        minutes=360,
        seed=int(time.time()),
        duplicate_rate=0.02,
        reorder_rate=0.01,
        late_rate=0.005,
        reboot_rate=0.002,
        malformed_rate=0.002,
        loss_rate=0.001,
    )
    print(f"planning {options.vehicles} vehicles and {options.iot_sims} IoT SIMs, "
          f"{options.minutes} simulated minutes …")  # fmt: skip
    messages = plan_fleet(options)
    vehicles = sorted({m.report.iccid for m in messages if m.report and m.fleet == "vehicle"})
    iot_sims = sorted({m.report.iccid for m in messages if m.report and m.fleet == "iot"})
    # Provisioned without an owner for now: the sponsors' part gives them to the automaker.
    # Each device gets its identity with its SIM: vehicles a certificate, IoT SIMs (firmware
    # without certificate storage) a password.
    issued = []
    for iccids, kind in ((vehicles, "certificate"), (iot_sims, "password")):
        answer = httpx.post(
            f"{api}/v1/operator/sims", params={"device_credentials": kind},
            json={"iccids": iccids, "label": "demo fleet"}, headers=auth, timeout=60,
        )  # fmt: skip
        answer.raise_for_status()
        issued += answer.json()["device_credentials"]
    identities = identities_from(issued)
    listeners = _device_listeners(settings, logs / "devices")
    certificates = sum(1 for i in identities.values() if i.kind == "certificate")
    passwords = len(identities) - certificates
    print(f"{len(identities)} device identities issued ({certificates} certificates,"
          f" {passwords} passwords); every device connects over TLS")  # fmt: skip
    _wait_accepted(listeners, identities)
    outgoing, strays = sendable(messages, identities)
    if strays:
        print(f"not sent: {len(strays)} malformed messages to a topic no device may use"
              " (the broker refuses them)")  # fmt: skip

    started = datetime.now(UTC)
    rate = len(outgoing) / max(seconds * 0.75, 1.0)
    print(f"publishing {len(outgoing):,} messages at ~{rate:,.0f}/s to two ingest workers …")
    asyncio.run(
        publish_plan(
            outgoing,
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            rate=rate,
            progress=True,
            devices=(listeners, identities),
        )
    )
    summary = summarize(outgoing)
    summary.lost = messages.lost
    iccids = sorted({m.report.iccid for m in messages if m.report})
    with psycopg.connect(settings.database_dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while True:
            row = conn.execute(
                "SELECT count(*) FROM usage_reports WHERE iccid = ANY(%s) AND received_at >= %s",
                (iccids, started),
            ).fetchone()
            stored_reports = int(row[0]) if row else 0
            if stored_reports >= summary.reports or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        stored = {
            app: (int(up), int(down), int(n))
            for app, up, down, n in conn.execute(
                "SELECT app, sum(up_bytes), sum(down_bytes), count(*) FROM usage_items"
                " WHERE iccid = ANY(%s) AND received_at >= %s GROUP BY app",
                (iccids, started),
            ).fetchall()
        }
        time.sleep(1.0)
        rejects: dict[str, int] = dict(
            conn.execute(
                "SELECT reason, count(*) FROM ingest_rejects WHERE received_at >= %s"
                " GROUP BY reason ORDER BY reason",
                (started,),
            ).fetchall()
        )
        row = conn.execute(
            "SELECT coalesce(sum(last_seq - first_seq + 1 - reports), 0) FROM sim_boots"
            " WHERE iccid = ANY(%s) AND last_seen >= %s",
            (iccids, started),
        ).fetchone()
        missing = int(row[0]) if row else 0
    duplicates = sum(
        _metric_total(p, "flowbill_ingest_reports_duplicate_total") for p in worker_ports
    )
    unprovisioned = sum(
        _metric_total(p, "flowbill_ingest_reports_unprovisioned_total") for p in worker_ports
    )

    print()
    print(f"{'app':<20} {'items sent':>11} {'items stored':>12} {'MB sent':>11} "
          f"{'MB stored':>11}  match")  # fmt: skip
    all_match = stored_reports == summary.reports
    for app in sorted(set(summary.per_app) | set(stored)):
        sent = summary.per_app.get(app)
        sent_t = (sent.up, sent.down, sent.items) if sent else (0, 0, 0)
        got = stored.get(app, (0, 0, 0))
        match = sent_t == got
        all_match &= match
        print(
            f"{app:<20} {sent_t[2]:>11,} {got[2]:>12,} {(sent_t[0] + sent_t[1]) / MB:>11.2f} "
            f"{(got[0] + got[1]) / MB:>11.2f}  {'yes' if match else 'NO'}"
        )
    print()
    print(f"reports sent (distinct): {summary.reports:,}   stored: {stored_reports:,}")
    print(f"duplicates dropped: {duplicates:,.0f} (sent {summary.duplicates:,} repeats)")
    print(f"unprovisioned reports stored and counted: {unprovisioned:,.0f}")
    # A loss at the very end of a boot leaves no gap to see until the next report arrives.
    print(f"missing reports found in sequence gaps: {missing:,} (the fleet lost {summary.lost:,})")
    print("rejects by reason: " + (", ".join(f"{k}={v}" for k, v in rejects.items()) or "none"))
    malformed = ", ".join(f"{k}={v}" for k, v in sorted(summary.malformed.items()))
    print(f"malformed sent by expected reason: {malformed or 'none'}")
    print()
    print("the wallet: a promotion, check-ins, top-ups and exchange orders over the API …")
    wallet = run_wallet_demo(api, key, gateway=env["FLOWBILL_GATEWAY_URL"])
    for line in wallet.lines():
        print(f"  {line}")
    all_match = all_match and wallet.books_balanced
    print()
    print("IoT cards: a merchant's store, real-name verification, activation, recharges …")
    iot = run_iot_demo(api, key)
    for line in iot.lines():
        print(f"  {line}")
    print()
    print("sponsors: who pays each app's bytes (automaker, map vendor, music provider, drivers) …")
    calendar = Calendar.from_settings(settings)
    scenario = billing_demo.set_up(
        api, key, vehicle_iccids=vehicles,
        valid_from=earliest_open(datetime.now(UTC), calendar.zone, calendar.closing_days),
    )  # fmt: skip
    print(f"  {scenario.vehicles} vehicles with drivers ({scenario.funded_drivers} wallets"
          " filled by a promotion), 3 sponsors, 3 policies; `flowbill bill` runs …")  # fmt: skip
    billing_port = _free_port()
    processes["billing"] = _spawn(
        ["bill", "--metrics-port", str(billing_port)], _as("billing", env), logs / "billing.log"
    )
    (logs / "pids.json").write_text(json.dumps({k: p.pid for k, p in processes.items()}))
    billing_demo.wait_allocated(api, key)
    for line in billing_demo.report_lines(
        api, key, scenario, period=format_period(calendar.period_of(datetime.now(UTC)))
    ):
        print(f"  {line}")
    with psycopg.connect(settings.database_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(up_bytes + down_bytes), 0) FROM usage_items"
            "        WHERE iccid = ANY(%(i)s) AND received_at >= %(t)s),"
            "       (SELECT coalesce(sum(a.bytes), 0) FROM allocations a JOIN usage_reports r"
            "        USING (iccid, boot, seq, window_start)"
            "        WHERE a.iccid = ANY(%(i)s) AND r.received_at >= %(t)s)",
            {"i": iccids, "t": started},
        ).fetchone()
    allocated_all = row is not None and row[0] == row[1]
    print(f"  stored bytes {row[0] if row else 0:,} = allocated bytes {row[1] if row else 0:,}:"
          f" {'yes' if allocated_all else 'NO'}")  # fmt: skip
    all_match = all_match and allocated_all
    print()
    print(f"API docs:        {api}/docs")
    print(f"API metrics:     {api}/metrics")
    for n, port in enumerate(worker_ports, start=1):
        print(f"ingest {n} metrics: http://127.0.0.1:{port}/metrics")
    print(f"operator key:    {logs / 'operator.key'}")
    print(f"billing metrics: http://127.0.0.1:{billing_port}/metrics")
    print("The API, the ingest workers, the allocation run and the gateway simulator keep"
          " running;"
          " `make stop` stops them.")  # fmt: skip
    print("sent and stored match, the books balance" if all_match else "MISMATCH: see above")
    link = billing_demo.driver_page_link(api, scenario)
    print(f"the driver page for a demo driver (open, then press Sign in): {link}")
    return 0 if all_match else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo")
    parser.add_argument("action", choices=["stop"])
    parser.add_argument("--dir", default=str(STATE))
    args = parser.parse_args(argv)
    stop_services(Path(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
