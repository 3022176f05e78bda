"""Grafana's provisioning and dashboards (deploy/grafana/), checked without Grafana.

Every dashboard parses and names only the provisioned data sources; every PromQL metric is
one Flowbill exports; every SQL query runs, after Grafana's macros are expanded as Grafana
expands them, against the migrated test database as the read-only role — which can read
nothing else and write nothing at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from flowbill import metrics
from flowbill.db import Connection
from flowbill.settings import Settings
from flowbill.units import MB
from tests.conftest import REPO, new_iccid
from wallet import service

GRAFANA = REPO / "deploy" / "grafana"
ROLE_PASSWORDS = REPO / "deploy" / "postgres" / "set_role_passwords.py"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ROLE = "flowbill_grafana"


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml")):
        for source in _load_yaml(path)["datasources"]:
            assert source["uid"] not in found, source["uid"]
            found[source["uid"]] = source
    return found


def _compose_service(name: str) -> dict[str, Any]:
    service_: dict[str, Any] = _load_yaml(REPO / "docker-compose.yml")["services"][name]
    return service_


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    datasource: str
    target: dict[str, Any]


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def _queries() -> list[Query]:
    found = []
    for path in DASHBOARDS:
        board = _load(path)
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel["datasource"]
                found.append(Query(board["title"], panel["title"], source["uid"], target))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                target = query if isinstance(query, dict) else {"expr": query}
                target = {"expr": target.get("query", "")} | target
                found.append(Query(board["title"], f"${variable['name']}",
                                   variable["datasource"]["uid"], target))  # fmt: skip
    return found


# --- Provisioning ------------------------------------------------------------------------------


def test_the_data_sources_are_prometheus_and_the_read_only_role() -> None:
    sources = _datasources()
    assert set(sources) == {"flowbill-prometheus", "flowbill-timescaledb"}
    prometheus = sources["flowbill-prometheus"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    timescale = sources["flowbill-timescaledb"]
    assert timescale["type"] == "grafana-postgresql-datasource"
    assert timescale["user"] == ROLE
    assert timescale["jsonData"]["database"] == "flowbill"
    # The password comes from the container's environment, which compose fills from the
    # same required variable the role's password is set from.
    assert timescale["secureJsonData"]["password"] == "$__env{FLOWBILL_GRAFANA_DB_PASSWORD}"
    grafana = _compose_service("grafana")
    reader = _compose_service("db-logins")
    for service_ in (grafana, reader):
        assert service_["environment"]["FLOWBILL_GRAFANA_DB_PASSWORD"] == (
            "${FLOWBILL_GRAFANA_DB_PASSWORD:?set FLOWBILL_GRAFANA_DB_PASSWORD}"
        )
    migration = (REPO / "migrations" / "0014.grafana_reader.sql").read_text()
    assert f"CREATE ROLE {ROLE} NOLOGIN" in migration
    statements = [line for line in migration.splitlines() if not line.startswith("--")]
    assert not any("PASSWORD" in line.upper() for line in statements)


def test_compose_runs_grafana_locally_with_the_provisioning_read_only() -> None:
    grafana = _compose_service("grafana")
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == (
        "${FLOWBILL_GRAFANA_ADMIN_PASSWORD:?set FLOWBILL_GRAFANA_ADMIN_PASSWORD}"
    )
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    mounts = {m.split(":")[0]: m.split(":", 1)[1] for m in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning:ro"
    assert mounts["./deploy/grafana/dashboards"] == "/etc/grafana/dashboards:ro"
    assert mounts["grafana-data"] == "/var/lib/grafana"
    assert "healthcheck" in grafana
    assert grafana["depends_on"]["db-logins"]["condition"] == ("service_completed_successfully")
    assert "prometheus" in grafana["depends_on"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).exists()
    script = _compose_service("db-logins")["volumes"][0].split(":")[0]
    assert (REPO / script).exists()
    (provider,) = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "flowbill.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


# --- Dashboards --------------------------------------------------------------------------------


def test_the_dashboards_are_valid_and_name_only_provisioned_data_sources() -> None:
    assert {path.stem for path in DASHBOARDS} >= {"ingest", "billing", "wallet", "api"}
    sources = _datasources()
    uids, titles = set(), set()
    for path in DASHBOARDS:
        board = _load(path)
        assert board["uid"] not in uids, path.name
        assert board["title"] not in titles, path.name
        uids.add(board["uid"])
        titles.add(board["title"])
        assert len(board["uid"]) <= 40
        assert board["schemaVersion"] >= 36
        assert board.get("id") is None  # provisioned dashboards get their id from Grafana
        panel_ids = set()
        for panel in _panels(board["panels"]):
            assert panel["id"] not in panel_ids, (path.name, panel["title"])
            panel_ids.add(panel["id"])
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (path.name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["targets"], (path.name, panel["title"])
            source = panel["datasource"]
            assert source["uid"] in sources, (path.name, panel["title"])
            assert source["type"] == sources[source["uid"]]["type"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == source, (path.name, panel["title"])
        for variable in board["templating"]["list"]:
            if "datasource" in variable:
                assert variable["datasource"]["uid"] in sources


def _exported_names(collector: MetricWrapperBase) -> set[str]:
    """The sample names a collector exposes (the client's naming rules)."""
    names = set()
    for family in collector.describe():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")}
        elif family.type == "summary":
            names |= {family.name, f"{family.name}_count", f"{family.name}_sum"}
        else:
            names.add(family.name)
    return names


def _registered() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names |= _exported_names(value)
    return names


def test_every_promql_metric_is_one_flowbill_exports() -> None:
    registered = _registered()
    assert "flowbill_ingest_messages_received_total" in registered
    assert "flowbill_ingest_batch_commit_seconds_bucket" in registered
    used: set[str] = set()
    for query in _queries():
        if query.datasource != "flowbill-prometheus":
            continue
        expr = query.target["expr"]
        assert expr.count("(") == expr.count(")"), (query.panel, expr)
        used |= set(re.findall(r"\bflowbill_[a-z0-9_]+", expr))
    unknown = sorted(used - registered)
    assert unknown == [], f"not exported by flowbill/metrics.py: {unknown}"
    # A histogram's quantiles need its buckets, not the family name alone.
    assert not any(name in registered and name + "_bucket" in registered for name in used)


# --- SQL as Grafana sends it -------------------------------------------------------------------

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Grafana's own variables that a SQL query may use, as the frontend substitutes them.
_VARIABLES = {"__interval": "5m", "__interval_ms": "300000", "__rate_interval": "5m"}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand_macros(sql: str, *, start: datetime, end: datetime) -> str:
    """The SQL Grafana's PostgreSQL data source sends for a panel (with `timescaledb: true`):
    a port of its macro engine (pkg/tsdb/grafana-postgresql-datasource/macros.go)."""
    for name, value in _VARIABLES.items():
        sql = sql.replace(f"${{{name}}}", value)
        sql = re.sub(rf"\${name}\b(?!\()", value, sql)

    def interval(arg: str) -> float:
        found = _DURATION.match(arg.strip("'"))
        assert found, f"interval {arg!r}"
        return int(found[1]) * _SECONDS[found[2]]

    def evaluate(name: str, args: list[str]) -> str:
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(end)}'"
        if name == "__timeGroup":
            assert len(args) >= 2, "$__timeGroup needs a column and an interval"
            return f"time_bucket('{interval(args[1]):.3f}s',{args[0]})"
        if name == "__timeGroupAlias":
            return evaluate("__timeGroup", args) + ' AS "time"'
        if name == "__unixEpochFilter":
            low, high = int(start.timestamp()), int(end.timestamp())
            return f"{args[0]} >= {low} AND {args[0]} <= {high}"
        raise AssertionError(f"unknown macro ${name}")

    def replace(found: re.Match[str]) -> str:
        name = found[1]
        # Grafana treats `$__timeGroup(...)` followed by a comma as the old aliasing form.
        if name == "__timeGroup" and sql[found.end() : found.end() + 1] == ",":
            name = "__timeGroupAlias"
        return evaluate(name, [arg.strip() for arg in found[2].split(",")])

    expanded = _MACRO.sub(replace, sql)
    leftover = re.findall(r"\$\{?\w+", expanded)
    assert not leftover, f"variables Grafana would substitute but the test does not: {leftover}"
    return expanded


def test_macro_expansion_matches_grafana() -> None:
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)
    assert expand_macros(
        "SELECT $__timeGroupAlias(t, $__interval), 1 FROM x WHERE $__timeFilter(t)",
        start=start, end=end,
    ) == (
        "SELECT time_bucket('300.000s',t) AS \"time\", 1 FROM x WHERE t BETWEEN "
        "'2026-11-25T08:00:00.000000Z' AND '2026-11-25T09:00:00.000000Z'"
    )  # fmt: skip
    assert expand_macros("SELECT $__timeGroup(t, '1h'), 1", start=start, end=end) == (
        "SELECT time_bucket('3600.000s',t) AS \"time\", 1"
    )
    with pytest.raises(AssertionError):
        expand_macros("SELECT $__unknownMacro(t)", start=start, end=end)


def _sql_queries() -> list[Query]:
    return [q for q in _queries() if q.datasource == "flowbill-timescaledb"]


def test_the_dashboards_read_the_database() -> None:
    text = "\n".join(q.target["rawSql"] for q in _sql_queries())
    # Sequence gaps, rejects, allocation lag, budget burn, wallet flows, breakage, expiry.
    for table in ("sim_boots", "ingest_rejects", "billing_batches", "allocation_daily",
                  "policy_spend", "grafana_sponsors", "ledger_entries", "wallet_lots",
                  "usage_hourly"):  # fmt: skip
        assert re.search(rf"\b{table}\b", text), table


async def _run_all(
    conn: Connection, *, start: datetime, end: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Every dashboard query, as the read-only role; rows by panel title."""
    results: dict[str, list[dict[str, Any]]] = {}
    failures = []
    # SET LOCAL would outlive the savepoint (until the test's transaction ends): reset it.
    await conn.execute(f"SET ROLE {ROLE}")
    try:
        for query in _sql_queries():
            sql = expand_macros(query.target["rawSql"], start=start, end=end)
            try:
                async with conn.transaction():
                    cur = await conn.execute(sql)
                    columns = [c.name for c in cur.description or []]
                    rows = [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]
            except psycopg.Error as error:
                failures.append(f"{query.dashboard} / {query.panel}: {error}")
                continue
            if query.target.get("format") == "time_series":
                assert "time" in columns, (query.panel, columns)
            results[query.panel] = rows
    finally:
        await conn.execute("RESET ROLE")
    assert failures == []
    return results


def _total(rows: list[dict[str, Any]], column: str, **where: object) -> float:
    return sum(
        float(row[column] or 0)
        for row in rows
        if all(row.get(key) == value for key, value in where.items())
    )


async def test_every_query_runs_as_the_read_only_role_and_counts_what_it_should(
    conn: Connection,
) -> None:
    now = datetime.now(UTC)
    start, end = now - timedelta(days=30), now + timedelta(hours=1)
    before = await _run_all(conn, start=start, end=end)

    # A boot that skipped 3 of 10 sequence numbers, a reject, a billing batch 42 s behind.
    await conn.execute(
        """INSERT INTO sim_boots (iccid, boot, first_seq, last_seq, reports, first_seen,
                                  last_seen)
           VALUES (%s, 1, 1, 10, 7, now() - interval '1 hour', now())""",
        (new_iccid(),),
    )
    await conn.execute(
        """INSERT INTO ingest_rejects (received_at, topic, reason, detail, payload, payload_size)
           VALUES (now(), 'flowbill/v1/sims/x/usage', 'grafana_test', 'detail', 'x', 1)"""
    )
    await conn.execute(
        """INSERT INTO billing_batches (from_xid, to_xid, items, allocations, bytes,
                                        adjustments, oldest_received_at, finished_at)
           VALUES (0, 1, 5, 5, 500, 0, now() - interval '42 seconds', now())"""
    )
    # A sponsor whose policy has used 750 of its 1000-byte budget.
    sponsor_name = f"Grafana test sponsor {secrets.token_hex(4)}"
    cur = await conn.execute(
        "INSERT INTO tenants (name, role) VALUES (%s, 'sponsor') RETURNING tenant_id",
        (sponsor_name,),
    )
    (sponsor_id,) = await cur.fetchone() or ()
    cur = await conn.execute(
        """INSERT INTO policies (sponsor_id, name, budget_bytes, create_key, create_digest)
           VALUES (%s, 'navigation', 1000, %s, '\\x00') RETURNING policy_id""",
        (sponsor_id, secrets.token_hex(8)),
    )
    (policy_id,) = await cur.fetchone() or ()
    await conn.execute(
        "INSERT INTO policy_spend (policy_id, used_bytes, used_money) VALUES (%s, 750, 0)",
        (policy_id,),
    )
    await conn.execute(
        """INSERT INTO allocation_daily (day, iccid, app, category, payer_kind, payer_id, bytes,
                                         items)
           VALUES ((now() AT TIME ZONE 'Asia/Shanghai')::date, %s, 'nav.amap', 'navigation',
                   'sponsor', %s, 750, 3)""",
        (new_iccid(), sponsor_id),
    )
    await conn.execute(
        """INSERT INTO usage_hourly (hour, iccid, app, up_bytes, down_bytes, items)
           VALUES (date_trunc('hour', now()), %s, 'nav.amap', 100, 900, 3)""",
        (new_iccid(),),
    )
    # The wallet: 7 MB granted in two lots, 1 MB spent, the 4 MB lot expired to breakage.
    merchant, user = str(uuid.uuid4()), f"u-{secrets.token_hex(4)}"
    await service.fund_pool(conn, key=secrets.token_hex(8), merchant=merchant,
                            data_bytes=100 * MB, price_minor=600, currency="CNY")  # fmt: skip
    past = now - timedelta(days=10)
    await service.grant(conn, key=secrets.token_hex(8), funder=merchant, user=user,
                        data_bytes=4 * MB, expires_at=now - timedelta(days=5), source="test",
                        now=past)  # fmt: skip
    await service.grant(conn, key=secrets.token_hex(8), funder=merchant, user=user,
                        data_bytes=3 * MB, expires_at=now + timedelta(days=10), source="test",
                        now=now)  # fmt: skip
    await service.spend(conn, key=secrets.token_hex(8), user=user, data_bytes=1 * MB,
                        to_kind=service.AccountKind.EXCHANGE, to_owner="item", now=now)  # fmt: skip
    assert await service.expire_lots(conn, now=now) >= 1

    after = await _run_all(conn, start=start, end=end)

    def delta(panel: str, column: str, **where: object) -> float:
        return _total(after[panel], column, **where) - _total(before[panel], column, **where)

    gaps = "Reports still missing, by hour of the boot's last report"
    assert delta(gaps, "missing reports") == 3
    assert delta(gaps, "boots with gaps") == 1
    assert delta("Rejects stored, by reason (time range)", "rejects", reason="grafana_test") == 1
    assert _total(after["Allocation lag per batch (database)"], "lag") >= 42
    (budget,) = [r for r in after["Budgets: used against budget, per policy"]
                 if r["sponsor"] == sponsor_name]  # fmt: skip
    assert budget["budget used"] == pytest.approx(0.75)
    assert budget["used bytes"] == 750
    daily = "Sponsored traffic per day, by sponsor"
    assert _total(after[daily], "value", metric=sponsor_name) == 750
    assert delta("Traffic per hour and active SIMs", "bytes") == 1000
    flows = "Wallet flows per day, by transaction kind"
    assert delta(flows, "value", metric="grant") == 7 * MB
    assert delta(flows, "value", metric="spend") == -1 * MB
    assert delta(flows, "value", metric="expiry") <= -4 * MB
    assert delta("Breakage in the time range", "breakage") >= 4 * MB
    assert delta("Breakage per month, by funder", "value", metric="merchant_pool") >= 4 * MB
    assert delta("Data in wallets", "in wallets") == 2 * MB
    assert delta("Data in wallets", "expires within 30 days") == 2 * MB
    assert delta("Data expiring in the next 30 days", "expiring") == 2 * MB


# --- The role ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT msisdn_masked FROM carrier_orders LIMIT 1",
        "SELECT * FROM iot_cards LIMIT 1",
        "SELECT * FROM iot_verifications LIMIT 1",
        "SELECT name FROM tenants LIMIT 1",
        "SELECT secret_sha256 FROM api_keys LIMIT 1",
        "SELECT payload FROM ingest_rejects LIMIT 1",
        "SELECT topic FROM ingest_rejects LIMIT 1",
        "SELECT owner FROM ledger_accounts LIMIT 1",
        "SELECT memo FROM ledger_transactions LIMIT 1",
        "SELECT iccid FROM allocation_daily LIMIT 1",
        "SELECT * FROM usage_items LIMIT 1",
        "SELECT * FROM allocations LIMIT 1",
        "INSERT INTO billing_batches (from_xid, to_xid, items, allocations, bytes, adjustments)"
        " VALUES (0, 0, 0, 0, 0, 0)",
        "UPDATE policy_spend SET used_bytes = 0",
        "DELETE FROM sim_boots",
        "CREATE TABLE grafana_was_here (x int)",
    ],
)
async def test_the_read_only_role_reads_nothing_else_and_writes_nothing(
    conn: Connection, statement: str
) -> None:
    await conn.execute(f"SET LOCAL ROLE {ROLE}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await conn.execute(statement)


async def test_the_role_cannot_log_in_until_given_a_password(conn: Connection) -> None:
    cur = await conn.execute(
        "SELECT a.rolcanlogin, a.rolpassword IS NULL, a.rolsuper, r.rolconfig"
        " FROM pg_authid a JOIN pg_roles r ON r.oid = a.oid WHERE a.rolname = %s",
        (ROLE,),
    )
    can_login, no_password, superuser, config = await cur.fetchone() or ()
    assert (can_login, no_password, superuser) == (False, True, False)
    assert "default_transaction_read_only=on" in config


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether a PostgreSQL SCRAM-SHA-256 verifier is the one of this password (RFC 5802)."""
    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert found, verifier
    iterations, salt, stored_key, server_key = found.groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))  # fmt: skip
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_ok = base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
    server_ok = base64.b64decode(server_key) == hmac.digest(salted, b"Server Key", "sha256")
    return stored_ok and server_ok


def test_the_password_step_lets_the_role_log_in_read_only(settings: Settings) -> None:
    password = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "FLOWBILL_DATABASE_URL": settings.database_dsn,
        "FLOWBILL_GRAFANA_DB_PASSWORD": password,
    }
    script = ROLE_PASSWORDS
    try:
        for _ in range(2):  # a second run (every `docker compose up`) is harmless
            result = subprocess.run(
                [sys.executable, str(script)], env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, result.stderr
            assert password not in result.stdout + result.stderr
        with psycopg.connect(settings.database_dsn, autocommit=True) as admin:
            row = admin.execute(
                "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)
            ).fetchone()
            assert row is not None
            assert row[0] is True
            assert _scram_matches(row[1], password)
            assert not _scram_matches(row[1], password + "x")
        # The test cluster asks every TCP login for its password: this logs in with it.
        with psycopg.connect(settings.database_dsn, user=ROLE, password=password) as reader:
            assert reader.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
            assert reader.execute("SELECT count(*) FROM billing_batches").fetchone() is not None
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                reader.execute("CREATE TEMPORARY TABLE t (x int)")
    finally:
        with psycopg.connect(settings.database_dsn, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {ROLE} NOLOGIN PASSWORD NULL")


def test_the_password_step_refuses_without_its_variables(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBILL_")}
    env["FLOWBILL_DATABASE_URL"] = settings.database_dsn
    result = subprocess.run(
        [sys.executable, str(ROLE_PASSWORDS)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "FLOWBILL_GRAFANA_DB_PASSWORD" in result.stderr
    assert "FLOWBILL_API_DB_PASSWORD" in result.stderr
