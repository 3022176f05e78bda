"""SQL that every document's repository shares: how allocation rows are rated.

Each row is rated under the tariff in force at its window's start, as it is allocated under
the policy terms in force then. Documents group rows into lines with the sums that rating
needs: bytes, and bytes with each row rounded up to its tariff's unit.
"""

from __future__ import annotations

# Each tariff with the moment the next one starts.
TARIFF_CTE = """
tariff AS (
    SELECT effective_from, lead(effective_from) OVER (ORDER BY effective_from) AS until,
           currency, wholesale_per_mb, overage_per_mb,
           rounding_unit_bytes AS unit, rounding_scope AS scope
      FROM tariffs
)"""
# An allocation row `a` with the tariff `t` in force at its window's start.
TARIFF_JOIN = """
LEFT JOIN tariff t
       ON a.window_start >= t.effective_from AND (t.until IS NULL OR a.window_start < t.until)"""
# The period of use of an adjustment (booked in a later period than it was used in).
USED_IN = (
    "CASE WHEN a.adjustment"
    " THEN (date_trunc('month', a.window_start AT TIME ZONE %(tz)s))::date END"
)
# A row's bytes rounded up to its tariff's unit.
ITEM_ROUNDED = "((a.bytes + t.unit - 1) / t.unit) * t.unit"
