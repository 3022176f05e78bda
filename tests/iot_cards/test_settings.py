"""The keyed hash of ID numbers needs a real key in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flowbill.settings import CALLBACK_PARTIES, Settings


def production(**values: object) -> Settings:
    base: dict[str, object] = {
        "environment": "production",
        "database_url": "postgresql://flowbill@127.0.0.1/flowbill",
        **{
            f"{party}_callback_secret": f"a-real-{party}-callback-secret-of-32-bytes"
            for party in CALLBACK_PARTIES
        },
        "mqtt_password": "a-real-mqtt-password",
    }
    return Settings(**{**base, **values})  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [None, "change-me", "secret", "short-but-not-a-placeholder"])
def test_a_placeholder_or_short_key_is_refused_in_production(key: str | None) -> None:
    values = {} if key is None else {"iot_id_hash_key": key}
    with pytest.raises(ValidationError, match="FLOWBILL_IOT_ID_HASH_KEY"):
        production(**values)


def test_a_real_key_is_accepted() -> None:
    settings = production(iot_id_hash_key="k" * 40)
    assert settings.iot_id_hash_key.get_secret_value() == "k" * 40
