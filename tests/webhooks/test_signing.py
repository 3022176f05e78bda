"""Pure rules: Standard Webhooks signing and verification, URLs, bodies, the retry schedule."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flowbill.settings import Settings
from webhooks import signing
from webhooks.delivery import JITTER, RETRY_SCHEDULE_SECONDS, retry_delay
from webhooks.errors import InvalidEndpointUrl, InvalidEvent, UnknownEventType
from webhooks.service import check_event_types, check_url, new_msg_id, render_body
from webhooks.signing import WebhookVerificationError

# The test vector of the Standard Webhooks reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
AT_SPEC_TIME = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC)


def spec_headers(**changes: str) -> dict[str, str]:
    found = {
        "webhook-id": SPEC_MSG_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    found.update(changes)
    return found


def test_sign_matches_the_spec_test_vector() -> None:
    signed = signing.sign(SPEC_SECRET, msg_id=SPEC_MSG_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
    assert signed == SPEC_SIGNATURE
    assert (
        signing.headers([SPEC_SECRET], msg_id=SPEC_MSG_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
        == spec_headers()
    )


@pytest.mark.parametrize("secret", [SPEC_SECRET, SPEC_SECRET.removeprefix("whsec_")])
def test_verify_accepts_the_spec_vector_with_or_without_the_prefix(secret: str) -> None:
    signing.verify(secret, body=SPEC_BODY, headers=spec_headers(), now=AT_SPEC_TIME)
    signing.verify(
        secret, body=SPEC_BODY.encode(), headers={k.upper(): v for k, v in spec_headers().items()},
        now=AT_SPEC_TIME + timedelta(minutes=4),
    )  # fmt: skip


def test_verify_finds_the_valid_signature_among_several() -> None:
    other = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    listed = f"{other} v1a,aGVsbG8= v2,{SPEC_SIGNATURE[3:]} {SPEC_SIGNATURE}"
    headers = spec_headers(**{"webhook-signature": listed})
    signing.verify(SPEC_SECRET, body=SPEC_BODY, headers=headers, now=AT_SPEC_TIME)


@pytest.mark.parametrize(
    ("body", "headers", "now"),
    [
        (SPEC_BODY + " ", spec_headers(), AT_SPEC_TIME),
        ('{"test":2432232314}', spec_headers(), AT_SPEC_TIME),
        (SPEC_BODY, spec_headers(**{"webhook-id": "msg_other"}), AT_SPEC_TIME),
        (SPEC_BODY, spec_headers(**{"webhook-timestamp": str(SPEC_TIMESTAMP + 1)}), AT_SPEC_TIME),
        (SPEC_BODY, spec_headers(**{"webhook-timestamp": "yesterday"}), AT_SPEC_TIME),
        (SPEC_BODY, spec_headers(**{"webhook-signature": "v1a," + SPEC_SIGNATURE[3:]}), None),
        (SPEC_BODY, spec_headers(**{"webhook-signature": ""}), AT_SPEC_TIME),
        (SPEC_BODY, {"webhook-id": SPEC_MSG_ID}, AT_SPEC_TIME),
        (SPEC_BODY, spec_headers(), AT_SPEC_TIME + timedelta(minutes=5, seconds=1)),
        (SPEC_BODY, spec_headers(), AT_SPEC_TIME - timedelta(minutes=5, seconds=1)),
    ],
    ids=[
        "body-changed", "body-reserialised", "other-id", "other-timestamp", "bad-timestamp",
        "wrong-scheme", "no-signature", "missing-headers", "too-old", "too-new",
    ],
)  # fmt: skip
def test_verify_refuses(body: str, headers: dict[str, str], now: datetime | None) -> None:
    with pytest.raises(WebhookVerificationError):
        signing.verify(SPEC_SECRET, body=body, headers=headers, now=now or AT_SPEC_TIME)


def test_verify_refuses_another_secret() -> None:
    with pytest.raises(WebhookVerificationError):
        signing.verify(
            signing.generate_secret(), body=SPEC_BODY, headers=spec_headers(), now=AT_SPEC_TIME
        )


def test_a_generated_secret_has_the_spec_format_and_is_unique() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert signing.secret_key(secret) == base64.b64decode(secret[6:])
    assert secret != signing.generate_secret()


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(b"x" * 16).decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
        "whsec_not base64!",
    ],
)
def test_secrets_outside_the_spec_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        signing.secret_key(secret)


def test_message_ids_are_random_and_never_hold_a_dot() -> None:
    ids = {new_msg_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("msg_") and "." not in i and len(i) == 31 for i in ids)


def test_the_body_is_compact_json_in_the_spec_shape() -> None:
    occurred = datetime(2026, 11, 25, 8, 0, 1, 250000, tzinfo=UTC)
    body = render_body(
        event_type="policy.cap_threshold_reached",
        payload={
            "policy_id": UUID(int=7), "price": Decimal("0.0300"), "at": occurred, "name": "地图",
        },
        occurred_at=occurred,
    )  # fmt: skip
    assert body.startswith('{"type":"policy.cap_threshold_reached","timestamp":"2026-11-25T08')
    assert json.loads(body) == {
        "type": "policy.cap_threshold_reached",
        "timestamp": "2026-11-25T08:00:01.250000Z",
        "data": {
            "policy_id": "00000000-0000-0000-0000-000000000007", "price": "0.0300",
            "at": "2026-11-25T08:00:01.250000Z", "name": "地图",
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "occurred_at"),
    [
        ({"x": 1}, datetime(2026, 1, 1)),
        ({"x": float("nan")}, datetime.now(UTC)),
        ({"x": object()}, datetime.now(UTC)),
        ({"x": datetime(2026, 1, 1)}, datetime.now(UTC)),
        ({"x": "y" * 70_000}, datetime.now(UTC)),
    ],
    ids=["naive-occurred-at", "nan", "object", "naive-datetime", "too-large"],
)
def test_bodies_that_cannot_be_sent_are_refused(
    payload: dict[str, object], occurred_at: datetime
) -> None:
    with pytest.raises(InvalidEvent):
        render_body(event_type="webhook.test", payload=payload, occurred_at=occurred_at)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/flowbill",
        "http://127.0.0.1:8080/in?token=abc",
        "https://[::1]:8443/x",
        "https://xn--fiqs8s.example/路径",
    ],
)
def test_urls_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "https://"),
        ("javascript:alert(1)", "https://"),
        ("example.com/hook", "https://"),
        ("https://user:pass@example.com/x", "credentials"),
        ("https://token@example.com/x", "credentials"),
        ("https:///nohost", "no host"),
        ("https://example.com:99999/x", "parsed"),
        ("https://example.com/a b", "spaces"),
        ("https://example.com/\nx", "control"),
        ("https://example.com/x#part", "fragment"),
        ("https://exa..mple.com/x", "host name"),
        ("https://example.com/" + "a" * 2000, "longer"),
        ("", "empty"),
    ],
)
def test_urls_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidEndpointUrl, match=why):
        check_url(url)


def test_event_type_filters_name_known_types() -> None:
    assert check_event_types(["webhook.test", "webhook.test", "card.usage_threshold_reached"]) == [
        "webhook.test",
        "card.usage_threshold_reached",
    ]
    with pytest.raises(UnknownEventType) as refused:
        check_event_types(["webhook.test", "policy.everything"])
    assert "policy.everything" in refused.value.detail
    assert "webhook.test" in refused.value.extensions["known"]


def test_retries_follow_the_schedule_with_jitter_then_give_up() -> None:
    rng = random.Random(4)
    for attempt_no, base in enumerate(RETRY_SCHEDULE_SECONDS, start=1):
        delay = retry_delay(attempt_no, RETRY_SCHEDULE_SECONDS, rng=rng)
        assert delay is not None
        assert base <= delay <= base * (1 + JITTER)
    assert retry_delay(len(RETRY_SCHEDULE_SECONDS) + 1, RETRY_SCHEDULE_SECONDS) is None
    assert retry_delay(1, ()) is None
    assert retry_delay(1, (5,), retry_after=120) == 120
    assert retry_delay(1, (5,), retry_after=10**9) == 24 * 3600


def test_the_settings_default_is_the_module_schedule() -> None:
    defaults = Settings(database_url="postgresql://x@127.0.0.1/x")  # type: ignore[arg-type]
    assert tuple(defaults.webhook_retry_schedule_seconds) == RETRY_SCHEDULE_SECONDS
    # Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over a day.
    assert sum(RETRY_SCHEDULE_SECONDS) == 5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000


def test_the_receivers_example_in_the_docs_verifies_our_webhooks() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    example = docs.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(example, namespace)  # noqa: S102 - our own documentation
    secret, old = signing.generate_secret(), signing.generate_secret()
    body = render_body(event_type="webhook.test", payload={"n": 1}, occurred_at=AT_SPEC_TIME)
    sent = signing.headers(
        [secret, old], msg_id=new_msg_id(), timestamp=int(time.time()), body=body
    )
    for key in (secret, old):
        namespace["verify"](key, sent, body.encode())
    with pytest.raises(ValueError, match="signature"):
        namespace["verify"](signing.generate_secret(), sent, body.encode())
    with pytest.raises(ValueError, match="signature"):
        namespace["verify"](secret, sent, body.encode() + b" ")
