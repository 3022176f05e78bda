"""`flowbill`: the one command line into everything."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowbill.logs import configure_logging
from flowbill.settings import Settings, get_settings


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency through uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


def _cmd_migrate(_: argparse.Namespace) -> int:
    from flowbill.migrate import apply_migrations

    applied = apply_migrations(get_settings().database_dsn)
    print(f"migrations applied: {len(applied)}" + (f" ({', '.join(applied)})" if applied else ""))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    if settings.api_metrics_port and args.workers > 1:
        # Each worker process has its own metrics; one port cannot serve them all.
        print("flowbill serve: FLOWBILL_API_METRICS_PORT needs --workers 1 (one process)")
        return 2
    # With several worker processes uvicorn imports the factory in each of them; each
    # builds its settings from the same environment.
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        loop="uvloop",
        # X-Forwarded-For/-Proto are believed only from these proxies (the client address in
        # logs and the https scheme behind a TLS proxy, which the cookies' Secure flag reads).
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # A client that sends headers but never its body holds no worker forever.
        timeout_keep_alive=5,
    )
    return 0


def _cmd_ingest(_: argparse.Namespace) -> int:
    from ingest.runner import run_worker

    _run(run_worker(get_settings()))
    return 0


def _cmd_retire(args: argparse.Namespace) -> int:
    from ingest.mqtt_session import end_session

    _run(end_session(get_settings(), identifier=args.client_id))
    print(f"session of {args.client_id} ended; the broker no longer queues for it")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.fleet.arguments import options_from_args
    from simulator.fleet.publish import simulate

    settings = get_settings()
    devices = None
    if args.credentials is not None:
        import tempfile

        from simulator.fleet.identities import DeviceListeners, load_identities

        if not (settings.mqtt_tls_port and settings.mqtt_tls_password_port):
            print("--credentials needs FLOWBILL_MQTT_TLS_PORT and _TLS_PASSWORD_PORT")
            return 2
        listeners = DeviceListeners(
            host=settings.mqtt_host, certificate_port=settings.mqtt_tls_port,
            password_port=settings.mqtt_tls_password_port,
            ca_file=settings.device_ca_file or "", folder=Path(tempfile.mkdtemp()),
        )  # fmt: skip
        devices = (listeners, load_identities(Path(args.credentials)))
    summary = _run(
        simulate(
            options_from_args(args),
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
            progress=not args.quiet,
            devices=devices,
        )
    )
    print(summary.as_table())
    return 0


def _cmd_stack(args: argparse.Namespace) -> int:
    from devstack import localstack

    return localstack.main(args.stack_args)


def _cmd_create_operator_key(args: argparse.Namespace) -> int:
    from flowbill import db
    from tenants import service as tenants
    from tenants.schemas import Role

    async def create() -> str:
        conn = await db.connect(get_settings(), application_name="flowbill-cli")
        try:
            async with conn.transaction():
                created = await tenants.create_tenant(
                    conn, name=args.name, role=Role.OPERATOR, key_label=args.label
                )
        finally:
            await conn.close()
        return created.key.api_key

    key = _run(create())
    if args.key_file:
        with open(args.key_file, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
        print(f"operator API key written to {args.key_file} (shown once)")
    else:
        print(key)
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from flowbill import db
    from ingest import service as metering

    settings = get_settings()
    keep_days = args.keep_days if args.keep_days is not None else settings.usage_retention_days

    async def apply() -> metering.RetentionOutcome:
        conn = await db.connect(settings, application_name="flowbill-retention", owner=True)
        try:
            async with conn.transaction():
                return await metering.apply_retention(
                    conn,
                    now=datetime.now(UTC),
                    keep_raw=timedelta(days=keep_days),
                    keep_rejects=timedelta(days=settings.ingest_reject_retention_days),
                    ingest_horizon=settings.ingest_max_age,
                )
        finally:
            await conn.close()

    try:
        outcome = _run(apply())
    except ValueError as exc:
        print(f"flowbill retention: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "chunks_dropped": outcome.chunks_dropped,
                "rejects_deleted": outcome.rejects_deleted,
                "boots_deleted": outcome.boots_deleted,
            }
        )
    )
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from flowbill import db
    from ingest import service as metering

    async def compact() -> int | None:
        conn = await db.connect(get_settings(), application_name="flowbill-compact")
        try:
            async with conn.transaction():
                return await metering.compact_rollups(
                    conn, now=datetime.now(UTC), lookback=timedelta(days=args.lookback_days)
                )
        finally:
            await conn.close()

    merged = _run(compact())
    print(
        "another process is compacting" if merged is None else f"rollup rows merged away: {merged}"
    )
    return 0


def _cmd_ledger(args: argparse.Namespace) -> int:
    from flowbill import db
    from wallet import service as wallet

    settings = get_settings()

    async def check() -> list[str]:
        conn = await db.connect(settings, application_name="flowbill-ledger")
        try:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return await wallet.check_books(conn)
        finally:
            await conn.close()

    async def expire() -> int:
        conn = await db.connect(settings, application_name="flowbill-ledger")
        total = 0
        try:
            while True:
                async with conn.transaction():
                    swept = await wallet.expire_lots(conn, now=datetime.now(UTC), limit=1000)
                total += swept
                if swept:
                    print(f"lots expired so far: {total}", flush=True)
                if swept < 1000:
                    return total
        finally:
            await conn.close()

    if args.ledger_command == "expire":
        print(f"lots expired: {_run(expire())}")
        return 0
    problems = _run(check())
    for problem in problems:
        print(problem)
    print("the books balance" if not problems else f"{len(problems)} problems")
    return 0 if not problems else 1


def _cmd_reconcile(args: argparse.Namespace) -> int:
    import time

    from flowbill import db
    from flowbill.periods import Calendar
    from iot_cards import settlement
    from iot_cards.gateways import HttpIotGateways
    from wallet import exchange, withdrawals
    from wallet.gateways import HttpGateways

    settings = get_settings()

    async def once() -> dict[str, object]:
        pool = db.create_pool(settings, name="flowbill-reconcile")
        await pool.open()
        try:
            async with HttpGateways(
                settings.gateway_url, timeout_seconds=settings.gateway_timeout_seconds
            ) as gateways:
                now = datetime.now(UTC)
                grace = timedelta(seconds=args.grace or settings.reconcile_grace_seconds)
                providers = exchange.Providers(
                    payments=gateways, fulfilment=gateways, callback_url=None
                )
                carrier = await withdrawals.reconcile(pool, gateways, now=now, grace=grace)
                orders = await exchange.reconcile(pool, providers, now=now, grace=grace)
                async with HttpIotGateways(
                    settings.iot_gateway_url, timeout_seconds=settings.gateway_timeout_seconds
                ) as iot_gateways:
                    iot = await settlement.reconcile(
                        pool, payments=gateways, invoicer=iot_gateways, identity=iot_gateways,
                        now=now, grace=grace, calendar=Calendar.from_settings(settings),
                    )  # fmt: skip
                return {
                    "carrier_orders": carrier.model_dump(),
                    "exchange_orders": orders.model_dump(),
                    "iot_cards": iot.model_dump(),
                }
        finally:
            await pool.close()

    _serve_metrics(settings, args.metrics_port)
    while True:
        print(json.dumps(_run(once())), flush=True)
        if not args.every:
            return 0
        time.sleep(args.every)


def _serve_metrics(settings: Settings, port: int) -> None:
    """A long-running command's /metrics for Prometheus (port 0: none)."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=settings.api_host)


def _cmd_bill(args: argparse.Namespace) -> int:
    from billing.allocation import worker as runner

    allocated = _run(
        runner.run(get_settings(), once=args.once, metrics_port=args.metrics_port or None)
    )
    print(f"items allocated: {allocated}", flush=True)
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    if args.action == "init-ca":
        from devices.ca import DeviceCa

        if args.dir is None:
            print("init-ca needs --dir: the new CA store", flush=True)
            return 2
        ca = DeviceCa.create(args.dir, now=datetime.now(UTC), name=args.name)
        print(f"device CA created in {args.dir}: ca.pem (give it to the broker) and ca.key"
              " (0600; only the API and the device reconciler read it)")  # fmt: skip
        print(ca.certificate_pem, end="")
        return 0
    from devices import reconciler

    _run(reconciler.run(get_settings(), once=args.once))
    return 0


def _cmd_webhooks(args: argparse.Namespace) -> int:
    from webhooks.delivery import run

    _run(run(get_settings(), once=args.once, metrics_port=args.metrics_port or None))
    return 0


def _cmd_iot_gateway_simulator(args: argparse.Namespace) -> int:
    from simulator.iot_gateways import behaviour_from_args, serve

    serve(
        host=args.host,
        port=args.port,
        behaviour=behaviour_from_args(args),
        # The identity-check provider is the one that calls back; invoicing answers at once.
        callback_secret=get_settings().callback_secret("identity"),
    )
    return 0


def _cmd_iot_sweep(args: argparse.Namespace) -> int:
    import time

    from flowbill import db
    from flowbill.periods import Calendar
    from iot_cards.service import usage

    calendar = Calendar.from_settings(get_settings())

    async def once() -> dict[str, object]:
        conn = await db.connect(get_settings(), application_name="flowbill-iot-sweep")
        try:
            async with conn.transaction():
                now = datetime.now(UTC)
                swept = await usage.sweep(conn, now=now, calendar=calendar)
                report: dict[str, object] = swept.model_dump()
                report["alerts_queued"] = await usage.queue_usage_alerts(conn, now=now)
                return report
        finally:
            await conn.close()

    _serve_metrics(get_settings(), args.metrics_port)
    while True:
        print(json.dumps(_run(once()), default=str), flush=True)
        if not args.every:
            return 0
        time.sleep(args.every)


def _cmd_gateway_simulator(args: argparse.Namespace) -> int:
    from simulator.gateways.app import serve
    from simulator.gateways.arguments import behaviour_from_args

    serve(
        host=args.host,
        port=args.port,
        behaviour=behaviour_from_args(args),
        callback_secrets={
            party: get_settings().callback_secret(party)
            for party in ("carrier", "payment", "fulfilment")
        },
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo

    return run_demo(seconds=args.seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowbill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        func=_cmd_migrate
    )

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.set_defaults(func=_cmd_serve)

    sub.add_parser("ingest", help="run one MQTT ingest worker").set_defaults(func=_cmd_ingest)

    retire = sub.add_parser(
        "retire-ingest-worker", help="end a retired worker's broker session (stop it first)"
    )
    retire.add_argument("--client-id", required=True)
    retire.set_defaults(func=_cmd_retire)

    simulate = sub.add_parser("simulate", help="publish a simulated fleet's usage reports")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.add_argument(
        "--credentials",
        help="a JSON file of the devices' identities (a provisioning answer with"
        " `device_credentials`): each device connects over TLS with its own; without it, the"
        " local stack's service account publishes everything (load generation)",
    )
    from simulator.fleet.arguments import add_arguments

    add_arguments(simulate)
    simulate.set_defaults(func=_cmd_simulate)

    stack = sub.add_parser("stack", help="the project-local PostgreSQL and Mosquitto (dev, test)")
    stack.add_argument("stack_args", nargs=argparse.REMAINDER)
    stack.set_defaults(func=_cmd_stack)

    operator = sub.add_parser("create-operator-key", help="create an operator tenant and key")
    operator.add_argument("--name", default="platform operator")
    operator.add_argument("--label", default="bootstrap")
    operator.add_argument("--key-file", help="write the key to this file instead of stdout")
    operator.set_defaults(func=_cmd_create_operator_key)

    retention = sub.add_parser(
        "retention", help="drop raw usage, sequence records and rejects past their retention"
    )
    retention.add_argument(
        "--keep-days", type=int, default=None, help="raw usage (default: USAGE_RETENTION_DAYS)"
    )
    retention.set_defaults(func=_cmd_retention)

    compact = sub.add_parser("compact-rollups", help="merge hourly rollup rows of closed hours")
    compact.add_argument("--lookback-days", type=int, default=3)
    compact.set_defaults(func=_cmd_compact)

    ledger = sub.add_parser("ledger", help="the wallet's books")
    ledger.add_argument(
        "ledger_command",
        choices=["check", "expire"],
        help="check: prove the books (balanced, cached balances true, lots add up);"
        " expire: move what is left in expired lots to breakage",
    )
    ledger.set_defaults(func=_cmd_ledger)

    reconcile = sub.add_parser(
        "reconcile", help="settle carrier and exchange orders whose outcome is not known"
    )
    reconcile.add_argument("--every", type=float, default=0, help="repeat every N seconds")
    reconcile.add_argument("--grace", type=float, default=0, help="seconds an order stays open")
    reconcile.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics here (0: off)"
    )
    reconcile.set_defaults(func=_cmd_reconcile)

    bill = sub.add_parser(
        "bill",
        help="allocate stored usage to its payers (sponsors, wallets, overage) and publish"
        " each SIM's coverage; runs until stopped",
    )
    bill.add_argument(
        "--once", action="store_true", help="stop when every stored item is allocated"
    )
    bill.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here (0: off)")
    bill.set_defaults(func=_cmd_bill)

    devices = sub.add_parser(
        "devices",
        help="reconcile: keep the broker's device passwords and CRL in line with the database"
        " and drop revoked devices' connections (runs until stopped); init-ca: make the"
        " device CA store",
    )
    devices.add_argument("action", choices=["reconcile", "init-ca"])
    devices.add_argument("--once", action="store_true", help="reconcile: one pass, then stop")
    devices.add_argument("--dir", help="init-ca: the folder of the new CA store")
    devices.add_argument(
        "--name", default="Flowbill device CA", help="init-ca: the CA's common name"
    )
    devices.set_defaults(func=_cmd_devices)

    webhooks = sub.add_parser("webhooks", help="send due webhooks (signed), with retries")
    webhooks.add_argument("--once", action="store_true", help="send what is due now and exit")
    webhooks.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics here (0: off)"
    )
    webhooks.set_defaults(func=_cmd_webhooks)

    iot_gateway = sub.add_parser(
        "iot-gateway-simulator",
        help="simulated identity-check provider and invoicing authority (not prod)",
    )
    iot_gateway.add_argument("--host", default="127.0.0.1")
    iot_gateway.add_argument("--port", type=int, default=8091)
    from simulator.iot_gateways import add_arguments as add_iot_gateway_arguments

    add_iot_gateway_arguments(iot_gateway)
    iot_gateway.set_defaults(func=_cmd_iot_gateway_simulator)

    iot_sweep = sub.add_parser(
        "iot-sweep",
        help="apply scheduled IoT card commands, judge usage, queue merchants' usage alerts",
    )
    iot_sweep.add_argument("--every", type=float, default=0, help="repeat every N seconds")
    iot_sweep.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics here (0: off)"
    )
    iot_sweep.set_defaults(func=_cmd_iot_sweep)

    gateway = sub.add_parser(
        "gateway-simulator", help="simulated carrier, payment and fulfilment gateways (not prod)"
    )
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8090)
    from simulator.gateways.arguments import add_arguments as add_gateway_arguments

    add_gateway_arguments(gateway)
    gateway.set_defaults(func=_cmd_gateway_simulator)

    demo = sub.add_parser("demo", help="run the stack with a simulated fleet and report")
    demo.add_argument("--seconds", type=float, default=60.0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "stack":
        configure_logging(get_settings().log_level if args.command != "simulate" else "WARNING")
    result: int = args.func(args)
    return result
