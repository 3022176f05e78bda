"""Billing's SQL names its own tables only: other domains' data comes through their services or
the views they own for billing's hot paths (docs/billing.md, "What billing reads of other
domains")."""

from __future__ import annotations

import re

from tests.conftest import REPO

# The migrations that create billing's tables.
BILLING_MIGRATIONS = ("0009.billing.sql", "0013.statements.sql")
_TABLE = re.compile(r"CREATE TABLE (\w+)")


def _tables(*, billing: bool) -> set[str]:
    return {
        name
        for path in (REPO / "migrations").glob("*.sql")
        if (path.name in BILLING_MIGRATIONS) == billing
        for name in _TABLE.findall(path.read_text())
    }


def test_billing_reads_no_other_domains_tables() -> None:
    foreign = _tables(billing=False)
    assert {"usage_items", "usage_reports", "policies", "policy_terms"} <= foreign
    assert not foreign & _tables(billing=True)
    named = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(" + "|".join(sorted(foreign)) + r")\b")
    found = {
        f"{path.relative_to(REPO)}: {table}"
        for path in (REPO / "billing").rglob("*.py")
        for table in named.findall(path.read_text())
    }
    assert not found, "billing's SQL names another domain's table"
