"""The one settings object. Every value comes from `FLOWBILL_*` environment variables."""

from __future__ import annotations

import socket
from datetime import timedelta
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDERS = {"changeme", "change-me", "password", "secret", "flowbill"}

# The outside parties that call us back, each with its own signing secret (docs/security.md).
CallbackParty = Literal["carrier", "payment", "fulfilment", "identity", "invoicing"]
CALLBACK_PARTIES: tuple[CallbackParty, ...] = get_args(CallbackParty)
MIN_CALLBACK_SECRET_BYTES = 32
# Distinct per party even in development, so that the parties stay apart there too; refused
# in production, as are placeholders and secrets shorter than 32 bytes.
_DEVELOPMENT_SECRET = "development-only-{}-callback-secret"  # noqa: S105 (refused in production)


class RateLimit(BaseModel):
    """A token bucket: `per_second` requests on average, `burst` at once after a pause.
    From the environment as JSON, e.g. `{"per_second": 20, "burst": 200}`."""

    per_second: float = Field(gt=0, le=100_000)
    burst: int = Field(ge=1, le=1_000_000)


MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWBILL_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"

    # PostgreSQL with TimescaleDB, e.g. postgresql://flowbill@127.0.0.1:5432/flowbill
    database_url: SecretStr
    database_pool_min: int = Field(default=2, ge=1)
    database_pool_max: int = Field(default=10, ge=1)

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls: bool = False
    mqtt_ca_file: str | None = None

    # Device identity (docs/security.md, "Device identity"). Devices connect over TLS: with a
    # client certificate on `mqtt_tls_port`, with a password on `mqtt_tls_password_port`;
    # `device_ca_file` is the CA certificate clients check the broker's certificate with.
    mqtt_tls_port: int | None = Field(default=None, ge=1, le=65535)
    mqtt_tls_password_port: int | None = Field(default=None, ge=1, le=65535)
    device_ca_file: str | None = None
    # The CA store (ca.pem, ca.key) that issues device certificates; unset: passwords only.
    device_ca_dir: str | None = None
    device_certificate_days: int = Field(default=730, ge=1, le=3650)
    # A rotated-out certificate is still accepted this long, so a device can switch over.
    device_rotation_overlap_hours: float = Field(default=168, ge=0, le=24 * 90)
    # The device reconciler writes the broker's password file and CRL into this folder (which
    # the broker reads), then signals the broker (pid file) to reload them, and drops revoked
    # devices' connections through the dynamic-security API as `mqtt_control_username`.
    device_broker_dir: str | None = None
    mqtt_broker_pid_file: str | None = None
    mqtt_control_username: str | None = None
    mqtt_control_password: SecretStr | None = None
    device_reconcile_interval_seconds: float = Field(default=0.5, gt=0, le=3600)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    # Ingest worker: the fixed client id makes the broker keep this worker's session.
    # Unset: "flowbill-ingest-<hostname>", stable across restarts of the same host/container.
    ingest_client_id: str | None = None
    # Workers of one group share the subscription. Empty: a plain subscription, for a single
    # worker; Mosquitto 2.0 restores those after a restart but not shared ones (see docs).
    ingest_share_group: str = Field(default="flowbill-ingest", pattern=r"^[A-Za-z0-9_.-]*$")
    ingest_session_expiry_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # A batch is committed when it holds this many messages, or after flush_seconds; under
    # load batches grow by themselves while the previous one commits.
    ingest_batch_messages: int = Field(default=2000, ge=1, le=100_000)
    ingest_flush_seconds: float = Field(default=0.02, gt=0, le=60)
    # Unacknowledged messages the broker may have in flight to us (MQTT v5 Receive
    # Maximum): this bounds the worker's memory, and a slow database slows reading.
    ingest_receive_maximum: int = Field(default=8000, ge=1, le=65535)
    ingest_metrics_port: int = Field(default=9101, ge=0, le=65535)
    ingest_max_clock_skew_seconds: int = Field(default=300, ge=0)
    # How often a worker merges the hourly rollup rows of closed hours (0 = never; one
    # worker at a time does it, under an advisory lock).
    ingest_compaction_interval_seconds: float = Field(default=600, ge=0)
    # What the worker holds in memory, received but not yet committed: when either bound is
    # reached it stops reading from the broker (which holds the rest) until a batch is
    # committed. Unlike the Receive Maximum, this also counts QoS 0 messages.
    ingest_queue_messages: int = Field(default=20_000, ge=1, le=1_000_000)
    ingest_queue_bytes: int = Field(default=32 * 1024 * 1024, ge=128 * 1024)
    # Reports whose window started longer ago than this are rejected as `too_old`: they
    # could be replays of reports whose raw rows retention has already dropped, which dedup
    # can no longer recognise. Must be shorter than USAGE_RETENTION_DAYS.
    ingest_max_age: timedelta = Field(default=timedelta(days=35), gt=timedelta(0))
    # Rejects keep their raw bytes for the first N per SIM (the topic's ICCID) and UTC hour;
    # the rest are only counted, per SIM and hour (`ingest_reject_tally`).
    ingest_reject_payloads_per_sim_hour: int = Field(default=20, ge=0, le=10_000)

    # Retention (`flowbill retention`): raw usage reports and items, and the per-boot sequence
    # records (gaps), are kept this many days; rejects and their tallies for their own period.
    usage_retention_days: int = Field(default=400, ge=1)
    ingest_reject_retention_days: int = Field(default=30, ge=1)

    # The carrier, payment and fulfilment gateways (simulated outside production: see
    # docs/operations.md). A call that takes longer than the timeout is settled later.
    gateway_url: str = "http://127.0.0.1:8090"
    gateway_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Each party signs its callbacks with its own secret. To rotate one, set the new value and
    # move the old one to `…_PREVIOUS`: both verify during the overlap, which lasts until the
    # party signs with the new one and its retries of older callbacks are over; then unset it.
    carrier_callback_secret: SecretStr = SecretStr(_DEVELOPMENT_SECRET.format("carrier"))
    carrier_callback_secret_previous: SecretStr | None = None
    payment_callback_secret: SecretStr = SecretStr(_DEVELOPMENT_SECRET.format("payment"))
    payment_callback_secret_previous: SecretStr | None = None
    fulfilment_callback_secret: SecretStr = SecretStr(_DEVELOPMENT_SECRET.format("fulfilment"))
    fulfilment_callback_secret_previous: SecretStr | None = None
    identity_callback_secret: SecretStr = SecretStr(_DEVELOPMENT_SECRET.format("identity"))
    identity_callback_secret_previous: SecretStr | None = None
    invoicing_callback_secret: SecretStr = SecretStr(_DEVELOPMENT_SECRET.format("invoicing"))
    invoicing_callback_secret_previous: SecretStr | None = None
    # Where the gateways reach this API for callbacks; unset: no callbacks, reconciliation only.
    public_url: str | None = None
    # Orders open longer than this are settled by asking the gateways (must exceed the timeout).
    reconcile_grace_seconds: float = Field(default=60, gt=0)

    # Billing: periods are calendar months in this time zone. Usage that arrives within the
    # closing window after its month ends is still booked in that month; later, it is booked
    # in the current month as an adjustment. A month is invoiced only after its window.
    billing_time_zone: str = "Asia/Shanghai"
    billing_closing_days: int = Field(default=3, ge=0, le=60)
    # The allocation run: items per batch, and the pause between runs when there is no work.
    # A batch has a cost of its own, whatever its size: a daily total per SIM and app it
    # touches, a wallet draw per driver, a cap row per SIM and policy, a commit (measured: a
    # quarter of a second for 2,000 SIMs). 200,000 items spread it thin; at the run's speed
    # such a batch lasts about two seconds, and holds nothing the API waits on (only the run
    # locks the policies' spend rows; wallets are drawn at the end of the batch).
    billing_batch_items: int = Field(default=200_000, ge=1, le=1_000_000)
    billing_interval_seconds: float = Field(default=1.0, gt=0, le=3600)

    # Webhooks (docs/webhooks.md): a request without an answer within the timeout failed; a
    # failed delivery is retried after each delay in turn (the Standard Webhooks schedule,
    # as webhooks.delivery.RETRY_SCHEDULE_SECONDS), then given up. The sender pauses
    # interval_seconds when nothing is due.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    webhook_retry_schedule_seconds: list[float] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 36000], max_length=20
    )
    webhook_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Egress (docs/security.md, "Webhook egress"): webhooks go over https to public addresses
    # only. Development switches, refused in production: plain http, and private, loopback
    # and link-local addresses (the tests' own receivers listen on 127.0.0.1).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    # Fairness: requests in flight per sender process, and at most so many of them for one
    # endpoint and for one tenant, so that an endpoint that hangs holds only its own slots.
    webhook_concurrency: int = Field(default=64, ge=1, le=1000)
    webhook_endpoint_concurrency: int = Field(default=4, ge=1, le=100)
    webhook_tenant_concurrency: int = Field(default=16, ge=1, le=1000)
    # Test events (`POST /v1/webhooks/endpoints/{id}/test`) an endpoint takes per minute.
    webhook_test_events_per_minute: int = Field(default=5, ge=1, le=600)
    # Messages whose deliveries are all over, with their delivery log, are deleted this many
    # days after they were created; the sender checks every purge_interval_seconds.
    webhook_retention_days: float = Field(default=90, gt=0, le=3650)
    webhook_purge_interval_seconds: float = Field(default=3600, gt=0, le=86400)

    @model_validator(mode="after")
    def _webhook_egress_is_strict_in_production(self) -> Settings:
        if self.environment == "production" and (
            self.webhook_allow_http or self.webhook_allow_private
        ):
            raise ValueError(
                "FLOWBILL_WEBHOOK_ALLOW_HTTP and FLOWBILL_WEBHOOK_ALLOW_PRIVATE are for"
                " development only"
            )
        if self.webhook_endpoint_concurrency > self.webhook_tenant_concurrency:
            raise ValueError(
                "FLOWBILL_WEBHOOK_ENDPOINT_CONCURRENCY exceeds FLOWBILL_WEBHOOK_TENANT_CONCURRENCY"
            )
        return self

    @field_validator("web_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # Compose passes an unset variable as an empty one.
        return None if value == "" else value

    @field_validator("billing_time_zone")
    @classmethod
    def _known_time_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ValueError(f"FLOWBILL_BILLING_TIME_ZONE: no time zone {zone!r}") from exc
        return zone

    @model_validator(mode="after")
    def _ingest_horizon_within_retention(self) -> Settings:
        # A report older than retention may be a replay of one whose raw rows were dropped:
        # stored again, it would be billed twice.
        if self.ingest_max_age >= timedelta(days=self.usage_retention_days):
            raise ValueError(
                f"FLOWBILL_INGEST_MAX_AGE ({self.ingest_max_age}) must be shorter than"
                f" FLOWBILL_USAGE_RETENTION_DAYS ({self.usage_retention_days} days)"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.reconcile_grace_seconds <= self.gateway_timeout_seconds:
            raise ValueError("FLOWBILL_RECONCILE_GRACE_SECONDS must exceed the gateway timeout")
        if self.environment == "production":
            self._callback_secrets_are_real()
            if self.mqtt_password is None or self.mqtt_password.get_secret_value() in _PLACEHOLDERS:
                raise ValueError(
                    "FLOWBILL_MQTT_PASSWORD must be set to a real secret in production"
                )
            if self.database_pool_max < self.database_pool_min:
                raise ValueError("FLOWBILL_DATABASE_POOL_MAX is below FLOWBILL_DATABASE_POOL_MIN")
        return self

    # IoT cards: the identity-check provider and the invoicing service (simulated outside
    # production by `python -m simulator.iot_gateways`), and the key of the keyed hash that
    # is all we keep of a resident ID number (changing it orphans the per-ID card counts).
    iot_gateway_url: str = "http://127.0.0.1:8091"
    iot_id_hash_key: SecretStr = SecretStr("change-me")

    # The driver page (docs/driver-page.md): how long a browser stays signed in, and whether
    # its cookie is Secure (unset: always, unless the environment is development, where it is
    # Secure when the request came over https).
    web_session_hours: float = Field(default=12, gt=0, le=24 * 30)
    web_cookie_secure: bool | None = None
    # Where people's browsers reach the API (sign-in links); not PUBLIC_URL, which is where the
    # gateways call back and may be an internal address. Unset: the request's own address.
    web_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")

    # The HTTP server (`flowbill serve`): the proxies whose X-Forwarded-For/-Proto headers are
    # believed (comma-separated addresses or networks, "*" for any), and a separate port for
    # /metrics (0: /metrics on the API's own port).
    forwarded_allow_ips: str = "127.0.0.1"
    api_metrics_port: int = Field(default=0, ge=0, le=65535)

    # Limits (docs/operations.md, "Limits"). Request bodies: refused with 413 before they are
    # parsed; the imports take larger ones.
    request_body_max_bytes: int = Field(default=1 * MIB, ge=1024)
    request_import_body_max_bytes: int = Field(default=10 * MIB, ge=1024)
    # Requests per API key, by the key's role, in each API process.
    rate_limit_operator: RateLimit = RateLimit(per_second=100, burst=1000)
    rate_limit_sponsor: RateLimit = RateLimit(per_second=50, burst=500)
    rate_limit_merchant: RateLimit = RateLimit(per_second=50, burst=500)
    rate_limit_partner: RateLimit = RateLimit(per_second=100, burst=1000)
    rate_limit_app: RateLimit = RateLimit(per_second=200, burst=2000)
    rate_limit_driver: RateLimit = RateLimit(per_second=20, burst=200)
    # The longest one SQL statement may run, per component (0: no limit). Lock waits count.
    api_statement_timeout_seconds: float = Field(default=15, ge=0, le=3600)
    ingest_statement_timeout_seconds: float = Field(default=60, ge=0, le=3600)
    billing_statement_timeout_seconds: float = Field(default=600, ge=0, le=24 * 3600)
    webhooks_statement_timeout_seconds: float = Field(default=30, ge=0, le=3600)

    @model_validator(mode="after")
    def _iot_id_hash_key_is_real_in_production(self) -> Settings:
        key = self.iot_id_hash_key.get_secret_value()
        if self.environment == "production" and (key in _PLACEHOLDERS or len(key) < 32):
            raise ValueError("FLOWBILL_IOT_ID_HASH_KEY must be a real secret of 32+ characters")
        return self

    @model_validator(mode="after")
    def _web_url_is_https_in_production(self) -> Settings:
        if (
            self.environment == "production"
            and self.web_url
            and not self.web_url.startswith("https://")
        ):
            raise ValueError("FLOWBILL_WEB_URL must be an https:// address in production")
        return self

    def rate_limit(self, role: str) -> RateLimit:
        """The token bucket of an API key of this role."""
        limit = getattr(self, f"rate_limit_{role}")
        assert isinstance(limit, RateLimit)
        return limit

    def callback_secret(self, party: CallbackParty) -> str:
        """The secret `party` signs its callbacks with now (the simulators sign with it)."""
        return self._callback_secret_settings(party)[0].get_secret_value()

    def callback_secrets(self, party: CallbackParty) -> tuple[str, ...]:
        """Every secret a callback from `party` may be signed with: the current one, and the
        previous one while a rotation overlaps."""
        return tuple(
            secret.get_secret_value()
            for secret in self._callback_secret_settings(party)
            if secret is not None
        )

    def _callback_secret_settings(self, party: CallbackParty) -> tuple[SecretStr, SecretStr | None]:
        current = getattr(self, f"{party}_callback_secret")
        previous = getattr(self, f"{party}_callback_secret_previous")
        assert isinstance(current, SecretStr)
        assert previous is None or isinstance(previous, SecretStr)
        return current, previous

    def _callback_secrets_are_real(self) -> None:
        for party in CALLBACK_PARTIES:
            current, previous = self._callback_secret_settings(party)
            variable = f"FLOWBILL_{party.upper()}_CALLBACK_SECRET"
            for name, secret in ((variable, current), (f"{variable}_PREVIOUS", previous)):
                value = None if secret is None else secret.get_secret_value()
                if value is not None and (
                    value in _PLACEHOLDERS
                    or value.startswith(_DEVELOPMENT_SECRET.partition("{")[0])
                    or len(value.encode()) < MIN_CALLBACK_SECRET_BYTES
                ):
                    raise ValueError(
                        f"{name} must be a real secret of {MIN_CALLBACK_SECRET_BYTES}+ bytes"
                    )
            if previous is not None and previous.get_secret_value() == current.get_secret_value():
                raise ValueError(
                    f"FLOWBILL_{party.upper()}_CALLBACK_SECRET_PREVIOUS repeats the current secret"
                )
        secrets = [secret for party in CALLBACK_PARTIES for secret in self.callback_secrets(party)]
        if len(set(secrets)) < len(secrets):
            raise ValueError("each party's FLOWBILL_*_CALLBACK_SECRET must be its own")

    def broker_environment(self) -> dict[str, str]:
        """The `FLOWBILL_*` variables that reach the broker as these settings do, for a
        process started with them (a worker, the API, a billing run)."""
        values = {
            "FLOWBILL_MQTT_HOST": self.mqtt_host,
            "FLOWBILL_MQTT_PORT": str(self.mqtt_port),
            "FLOWBILL_MQTT_USERNAME": self.mqtt_username,
            "FLOWBILL_MQTT_PASSWORD": (
                self.mqtt_password.get_secret_value() if self.mqtt_password else None
            ),
        }
        return {k: v for k, v in values.items() if v is not None}

    @property
    def ingest_worker_id(self) -> str:
        return self.ingest_client_id or f"flowbill-ingest-{socket.gethostname()}"

    @property
    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings built once per process from the environment."""
    return Settings()  # type: ignore[call-arg]
