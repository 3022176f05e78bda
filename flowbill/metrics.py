"""Every Prometheus metric Flowbill exports, in one place.

Names carry the `flowbill_` prefix and base units; labels are bounded sets (a reject reason,
a route template), never an ICCID, a tenant or a user.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Ingest
INGEST_MESSAGES_RECEIVED = Counter(
    "flowbill_ingest_messages_received_total", "MQTT messages received on the usage topics."
)
INGEST_MESSAGES_ACKNOWLEDGED = Counter(
    "flowbill_ingest_messages_acknowledged_total",
    "Messages acknowledged to the broker (after the batch holding them was committed).",
)
INGEST_REPORTS_STORED = Counter(
    "flowbill_ingest_reports_stored_total", "Usage reports stored for the first time."
)
INGEST_REPORTS_DUPLICATE = Counter(
    "flowbill_ingest_reports_duplicate_total",
    "Reports dropped because the same report was already stored (repeats and redeliveries).",
)
INGEST_REPORTS_UNPROVISIONED = Counter(
    "flowbill_ingest_reports_unprovisioned_total",
    "Reports stored from ICCIDs that no one has provisioned yet.",
)
INGEST_MESSAGES_REJECTED = Counter(
    "flowbill_ingest_messages_rejected_total",
    "Messages stored in the rejects table instead of usage, by reason.",
    ["reason"],
)
INGEST_ITEMS_STORED = Counter(
    "flowbill_ingest_items_stored_total", "Per-app usage items stored (one per app per report)."
)
INGEST_BYTES_STORED = Counter(
    "flowbill_ingest_bytes_stored_total", "Traffic bytes stored, by direction.", ["direction"]
)
INGEST_MISSING_REPORTS_FOUND = Counter(
    "flowbill_ingest_missing_reports_found_total",
    "Reports found missing: sequence numbers skipped within a device boot.",
)
INGEST_MISSING_REPORTS_RECOVERED = Counter(
    "flowbill_ingest_missing_reports_recovered_total",
    "Missing reports that arrived late and closed a sequence gap.",
)
INGEST_BATCH_COMMIT_SECONDS = Histogram(
    "flowbill_ingest_batch_commit_seconds",
    "Time to write and commit one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INGEST_BATCH_MESSAGES = Histogram(
    "flowbill_ingest_batch_messages",
    "Messages per committed batch.",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
)
INGEST_PENDING_MESSAGES = Gauge(
    "flowbill_ingest_pending_messages", "Messages received but not yet committed and acknowledged."
)
INGEST_BROKER_CONNECTED = Gauge(
    "flowbill_ingest_broker_connected", "1 while the worker holds a broker connection."
)
INGEST_BROKER_RECONNECTS = Counter(
    "flowbill_ingest_broker_reconnects_total", "Broker connections lost and re-established."
)
INGEST_DATABASE_RETRIES = Counter(
    "flowbill_ingest_database_retries_total", "Batches retried after a database error."
)
INGEST_PENDING_BYTES = Gauge(
    "flowbill_ingest_pending_bytes",
    "Bytes (payloads and topics) received but not yet committed and acknowledged.",
)
INGEST_READ_PAUSES = Counter(
    "flowbill_ingest_read_pauses_total",
    "Times the worker stopped reading from the broker because its queue was full.",
)
INGEST_REJECTS_NOT_KEPT = Counter(
    "flowbill_ingest_rejects_not_kept_total",
    "Rejected messages only counted: their SIM had used up its kept rejects for the hour.",
)

# API
HTTP_REQUESTS = Counter(
    "flowbill_http_requests_total", "HTTP requests served.", ["method", "route", "status"]
)
HTTP_REQUESTS_REFUSED = Counter(
    "flowbill_http_requests_refused_total",
    "Requests refused by a limit before any database work: body_too_large, rate_limited"
    " (by the key's role), malformed_key, refused_key (refused by the database moments ago).",
    ["reason", "role"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "flowbill_http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

# Wallet: the outside parties and the orders that depend on them
GATEWAY_REQUESTS = Counter(
    "flowbill_gateway_requests_total",
    "Requests to the carrier, payment and fulfilment gateways, by outcome.",
    ["operation", "outcome"],
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "flowbill_gateway_request_duration_seconds",
    "Gateway request latency (timeouts included).",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WALLET_ORDERS_SETTLED = Counter(
    "flowbill_wallet_orders_settled_total",
    "Carrier and exchange orders settled, by kind and final state.",
    ["kind", "state"],
)
WALLET_RECONCILED = Counter(
    "flowbill_wallet_reconciled_total",
    "Open orders examined by reconciliation, by kind.",
    ["kind"],
)

# --- Billing: the allocation run and coverage --------------------------------------------------
BILLING_ITEMS_ALLOCATED = Counter(
    "flowbill_billing_items_allocated_total", "Usage items allocated to their payers."
)
BILLING_BYTES_ALLOCATED = Counter(
    "flowbill_billing_bytes_allocated_total",
    "Bytes allocated, by payer kind (sponsor, wallet, overage).",
    ["payer_kind"],
)
BILLING_SPONSOR_BYTES = Counter(
    "flowbill_billing_sponsor_bytes_total",
    "Bytes paid by sponsors (the budget burn), by sponsor tenant (a bounded set).",
    ["sponsor_id"],
)
BILLING_ADJUSTMENTS = Counter(
    "flowbill_billing_adjustment_items_total",
    "Items that arrived after their month's closing window and were booked later.",
)
BILLING_BATCH_SECONDS = Histogram(
    "flowbill_billing_batch_seconds",
    "Time to allocate one batch, from reading items to commit.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BILLING_LAG_SECONDS = Gauge(
    "flowbill_billing_lag_seconds",
    "Age of the oldest item in the last batch when it was allocated (receipt to allocation).",
)
BILLING_BACKLOG_ITEMS = Gauge(
    "flowbill_billing_backlog_items", "Stored items not yet allocated, at the last check."
)
BILLING_ALERTS = Counter(
    "flowbill_billing_alerts_total", "Cap and budget thresholds crossed, by kind.", ["kind"]
)
COVERAGE_PUBLISHED = Counter(
    "flowbill_coverage_published_total", "Coverage messages published (retained) to SIMs."
)
COVERAGE_BLOCKED_APPS = Gauge(
    "flowbill_coverage_blocked_sims", "SIMs with at least one blocked app, at the last refresh."
)

# Webhooks: outcome labels are a fixed set; never an endpoint, a tenant or a URL
WEBHOOK_ATTEMPTS = Counter(
    "flowbill_webhook_attempts_total",
    "Webhook requests, by outcome (succeeded, http_error, timeout, network_error, refused).",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "flowbill_webhook_deliveries_total",
    "Deliveries of a message to an endpoint that ended: succeeded, or failed after the last retry.",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "flowbill_webhook_attempt_duration_seconds",
    "Webhook request latency (timeouts included).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_QUEUE_DEPTH = Gauge(
    "flowbill_webhook_queue_depth",
    "Webhook attempts waiting to be sent: due now, or scheduled for a retry later.",
    ["state"],
)
WEBHOOK_IN_FLIGHT = Gauge(
    "flowbill_webhook_in_flight",
    "Webhook requests this sender has under way.",
)
WEBHOOK_PURGED = Counter(
    "flowbill_webhook_purged_total",
    "Rows deleted by the webhook retention purge, by table (messages, attempts).",
    ["table"],
)

# IoT cards: inventory, lifecycle, verification, orders, usage alerts, invoices
IOT_CARDS_IMPORTED = Counter("flowbill_iot_cards_imported_total", "IoT cards imported.")
IOT_CARD_TRANSITIONS = Counter(
    "flowbill_iot_card_transitions_total", "IoT card lifecycle changes, by command.", ["command"]
)
IOT_VERIFICATIONS = Counter(
    "flowbill_iot_verifications_total",
    "Real-name verifications, by outcome (submitted, verified, rejected, refused_limit).",
    ["outcome"],
)
IOT_ORDERS = Counter(
    "flowbill_iot_orders_total", "IoT card orders, by kind and state reached.", ["kind", "state"]
)
IOT_USAGE_ALERTS = Counter(
    "flowbill_iot_usage_alerts_total", "Usage threshold crossings recorded for merchants."
)
IOT_INVOICES = Counter(
    "flowbill_iot_invoices_issued_total", "Electronic invoices issued, by colour.", ["colour"]
)
